"""PPO for RLHF: clipped policy and value losses, GAE, KL-penalised rewards and KL controllers."""

from dataclasses import dataclass

import torch

from alignkit.losses.kl import kl_penalty
from alignkit.losses.reduction import aggregate_token_losses, masked_mean, masked_var, masked_whiten

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "explained_variance",
    "gae_advantages",
    "kl_penalty",
    "kl_penalized_rewards",
    "ppo_policy_loss",
    "ppo_value_loss",
    "whiten",
]

whiten = masked_whiten  # advantages are whitened over the valid tokens of the batch


def ppo_policy_loss(
    *,
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_epsilon: float = 0.2,
    aggregation: str = "token_mean",
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017, Eq. 7), per token.

    ρ_t = exp(log π(a_t) - log π_old(a_t)),   loss_t = max(-A_t·ρ_t, -A_t·clip(ρ_t, 1-ε, 1+ε))

    Args:
        logps: ``[B, T]`` log-probs of the sampled tokens under the current policy (with grad).
        old_logps: ``[B, T]`` the same under the policy that sampled them (detached).
        advantages: ``[B, T]`` (e.g. from :func:`gae_advantages`, whitened) or ``[B]`` (broadcast over T).
        mask: ``[B, T]`` 1 on response tokens.
        clip_epsilon: ε (0.2 in the paper and in TRL).
        aggregation, normalizer: see :func:`alignkit.losses.reduction.aggregate_token_losses`.

    Returns:
        ``(loss, metrics)``: a scalar loss (token-level losses are reduced here). Metrics (detached, token
        means over ``mask``): ``clipfrac`` (share of tokens where the clipped branch is active),
        ``approx_kl`` (½(log ρ)², as TRL's PPO logs), ``ratio``.
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    log_ratio = logps - old_logps
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_epsilon, 1 + clip_epsilon)
    per_token = torch.maximum(unclipped, clipped)
    loss = aggregate_token_losses(per_token, mask, aggregation=aggregation, normalizer=normalizer)
    with torch.no_grad():
        metrics = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": masked_mean(0.5 * log_ratio**2, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, metrics


def ppo_value_loss(
    *,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
    aggregation: str = "token_mean",
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss (OpenAI baselines PPO2; Ziegler et al. 2019 and TRL's PPO use it).

    V^clip_t = V_old,t + clip(V_t - V_old,t, -ε_v, ε_v),   loss_t = ½·max((V_t - R_t)², (V^clip_t - R_t)²)

    Shapes: ``values``, ``old_values``, ``returns``, ``mask`` ``[B, T]``. Returns ``(loss, metrics)``: scalar
    loss; metrics ``vf_clipfrac`` (share of tokens where the clipped error is larger) and ``value_error``
    (token mean of (V - R)²), detached.
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    per_token = 0.5 * torch.maximum(error, clipped_error)
    loss = aggregate_token_losses(per_token, mask, aggregation=aggregation, normalizer=normalizer)
    with torch.no_grad():
        metrics = {
            "vf_clipfrac": masked_mean((clipped_error > error).float(), mask),
            "value_error": masked_mean(error, mask),
        }
    return loss, metrics


def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, Eq. 16).

    δ_t = r_t + γ·V_{t+1} - V_t,   A_t = Σ_l (γλ)^l δ_{t+l},   returns R_t = A_t + V_t

    The episode ends at the last response token: values and rewards outside ``mask`` count as 0
    (right padding), so V_{T} = 0 after the last token. With γ = λ = 1, A_t + V_t is the reward-to-go.

    Shapes: ``rewards``, ``values``, ``mask`` ``[B, T]`` -> ``(advantages [B, T], returns [B, T])``, both
    detached and zero outside ``mask``. Whiten the advantages with :func:`whiten` afterwards if wanted.
    """
    with torch.no_grad():
        mask = mask.to(values.dtype)
        rewards, values = rewards * mask, values * mask
        advantages = torch.zeros_like(values)
        running = torch.zeros_like(values[:, 0])
        next_values = torch.zeros_like(values[:, 0])
        for t in reversed(range(values.size(1))):  # backward recursion A_t = δ_t + γλ·A_{t+1}
            delta = rewards[:, t] + gamma * next_values - values[:, t]
            running = delta + gamma * lam * running
            advantages[:, t] = running
            next_values = values[:, t]
        advantages = advantages * mask
        returns = (advantages + values) * mask
    return advantages, returns


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """How much of the returns' variance the value estimates explain (CleanRL's and TRL's PPO log it).

    EV = 1 - Var[R - V] / Var[R]   over the masked tokens (population variances)

    1: perfect values; 0: no better than a constant; < 0: worse than a constant. NaN when the
    returns do not vary. Shapes: ``values``, ``returns``, ``mask`` ``[B, T]`` -> scalar (detached).
    """
    with torch.no_grad():
        spread = masked_var(returns, mask, unbiased=False)
        if spread == 0:
            return torch.tensor(float("nan"))
        return 1 - masked_var(returns - values, mask, unbiased=False) / spread


def kl_penalized_rewards(
    *,
    scores: torch.Tensor,
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token RLHF rewards (Ziegler et al. 2019; Ouyang et al. 2022, Eq. 2).

    r_t = -β·KL_t  for every response token,   plus the sequence score on the last response token.

    Shapes: ``scores`` ``[B]`` (reward-model output), ``logps``/``ref_logps``/``mask`` ``[B, T]``.
    Returns ``(rewards [B, T], kl [B, T])`` (both detached, zero outside ``mask``); ``kl`` uses
    :func:`alignkit.losses.kl.kl_penalty` (``"k1"`` = log π - log π_ref, as TRL's PPO).
    """
    with torch.no_grad():
        mask = mask.to(logps.dtype)
        kl = kl_penalty(logps, ref_logps, estimator=estimator) * mask
        rewards = -kl_coef * kl
        # Index of the last response token in each row (mask may start after a prompt).
        positions = torch.arange(mask.size(1), device=mask.device).expand_as(mask)
        last = (positions * mask).argmax(dim=1)
        rewards[torch.arange(mask.size(0), device=mask.device), last] += scores.to(rewards.dtype)
    return rewards, kl


@dataclass
class FixedKLController:
    """A constant KL coefficient β (Ziegler et al. 2019, §2.2)."""

    kl_coef: float
    """β, the weight of the KL penalty."""

    def update(self, current_kl: float, n_steps: int) -> None:
        """Leave β unchanged (same interface as :class:`AdaptiveKLController`)."""


@dataclass
class AdaptiveKLController:
    """Proportional controller steering the observed KL towards a target (Ziegler et al. 2019, §2.2).

    e = clip(KL / target - 1, -0.2, 0.2),   β ← β·(1 + e·n_steps / horizon)
    """

    init_kl_coef: float
    """β at the start of training."""
    target: float
    """Target KL per sequence (nats)."""
    horizon: int
    """Number of samples over which the error is corrected (10,000 in the paper)."""

    def __post_init__(self) -> None:
        self.kl_coef = self.init_kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        """Raise β when the KL is above target and lower it when below; ``n_steps`` samples were seen."""
        proportional_error = min(max(float(current_kl) / self.target - 1, -0.2), 0.2)
        self.kl_coef *= 1 + proportional_error * n_steps / self.horizon
