"""GRPO family: group-relative advantages, RLOO advantages and the clipped GRPO / DAPO / Dr. GRPO loss."""

import torch

from alignkit.losses.kl import kl_penalty
from alignkit.losses.reduction import aggregate_token_losses, masked_mean

__all__ = ["GRPO_LOSS_TYPES", "IMPORTANCE_LEVELS", "grpo_loss", "group_advantages", "rloo_advantages",
           "truncated_importance_weights"]

# TRL GRPOTrainer ``loss_type`` -> our aggregation (TRL 1.16 default "dapo"). The normaliser TRL uses:
#   grpo    -> "sequence_mean"        token mean per sequence, then mean over sequences (Shao et al. 2024)
#   bnpo    -> "token_mean"           tokens of the local batch
#   dapo    -> "token_mean"           normalizer = tokens of the whole generation batch (Yu et al. 2025)
#   dr_grpo -> "constant_normalizer"  normalizer = batch_size · max_completion_length (Liu et al. 2025)
#   gspo    -> "sequence_mean"        with a sequence-level importance ratio (Zheng et al. 2025; TRL
#                                     loss_type="grpo", importance_sampling_level="sequence")
GRPO_LOSS_TYPES: dict[str, str] = {
    "grpo": "sequence_mean",
    "bnpo": "token_mean",
    "dapo": "token_mean",
    "dr_grpo": "constant_normalizer",
    "gspo": "sequence_mean",
}


def _token_log_ratio(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return log_ratio  # [B, T]: one ratio per token (PPO, GRPO)


def _sequence_log_ratio(log_ratio: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # [B, 1]: the length-normalised sequence ratio (π/π_old)^(1/|o|) = exp(mean_t log ρ_t) (GSPO Eq. 7).
    return masked_mean(log_ratio, mask, dim=-1).unsqueeze(-1)


# Level of the importance ratio: name -> log ρ [B, T] (or [B, 1]) from the per-token log ratio and the mask.
IMPORTANCE_LEVELS = {"token": _token_log_ratio, "sequence": _sequence_log_ratio}
# Loss types whose ratio is not per token (every other name in GRPO_LOSS_TYPES is "token").
_LOSS_TYPE_LEVEL = {"gspo": "sequence"}


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[B·G] or [B, G] rewards -> [B, G] (completions of one prompt are contiguous, as TRL samples them)."""
    if rewards.dim() == 2:
        if rewards.size(1) != group_size:
            raise ValueError(f"rewards [B, G] must have G = group_size = {group_size}, got {tuple(rewards.shape)}")
        return rewards
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    return rewards.view(-1, group_size)


def group_advantages(
    rewards: torch.Tensor, *, group_size: int, scale_by_std: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """Group-relative advantages (Shao et al. 2024, DeepSeekMath §4.1.2, outcome supervision).

    A_i = (r_i - mean_group(r)) / (std_group(r) + eps)      (scale_by_std=True: GRPO)
    A_i =  r_i - mean_group(r)                             (scale_by_std=False: Dr. GRPO, Liu et al. 2025)

    Convention (TRL ``scale_rewards="group"`` / ``"none"``): std is the unbiased (Bessel) std of the group and
    eps = 1e-4 is added to it, not to the variance. Shapes: ``[B·G]`` (G contiguous completions per prompt) or
    ``[B, G]`` -> the same shape as ``rewards``. Each group's advantages have zero mean.
    """
    grouped = _grouped(rewards, group_size)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_by_std:
        advantages = advantages / (grouped.std(dim=1, keepdim=True) + eps)
    return advantages.view_as(rewards)


def rloo_advantages(rewards: torch.Tensor, *, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out advantages (Ahmadian et al. 2024, "Back to Basics"; Kool et al. 2019).

    A_i = r_i - (1/(G-1)) Σ_{j≠i} r_j

    The baseline of each sample is the mean reward of the other G-1 samples of its prompt, so it is
    independent of the sample itself (unbiased). Equals TRL ``RLOOTrainer`` with ``normalize_advantages=False``
    (its default). Shapes: ``[B·G]`` or ``[B, G]`` -> same shape; needs G ≥ 2.
    """
    if group_size < 2:
        raise ValueError("RLOO needs group_size >= 2")
    grouped = _grouped(rewards, group_size)
    baselines = (grouped.sum(dim=1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - baselines).view_as(rewards)


def grpo_loss(
    *,
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logps: torch.Tensor | None = None,
    epsilon_low: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    aggregation: str = "token_mean",
    normalizer: float | torch.Tensor | None = None,
    importance_level: str | None = None,
    importance_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped GRPO objective with a k3 KL penalty (Shao et al. 2024, Eq. 3) and its DAPO / Dr. GRPO variants.

    ρ_t = exp(log π - log π_old),   ℓ_t = -min(ρ_t·A, clip(ρ_t, 1-ε_low, 1+ε_high)·A) + β·k3_t,
    k3_t = exp(log π_ref - log π) - (log π_ref - log π) - 1

    Clip-higher ε_high > ε_low is DAPO (Yu et al. 2025; they use 0.2 / 0.28). The per-token ℓ is reduced by
    ``aggregation``, one of ours or a TRL ``loss_type`` name from :data:`GRPO_LOSS_TYPES`:

    * ``"sequence_mean"``: TRL ``"grpo"``, the paper's 1/G Σ_i 1/|o_i| Σ_t.
    * ``"token_mean"``: TRL ``"bnpo"`` (local tokens) and ``"dapo"`` (pass ``normalizer`` = response tokens of
      the global batch, TRL's ``num_items_in_batch``).
    * ``"constant_normalizer"``: TRL ``"dr_grpo"`` with ``normalizer = batch_size * max_completion_length``.
    * ``"gspo"``: ``"sequence_mean"`` with the sequence-level ratio (below).

    ``importance_level`` (default: ``"sequence"`` for ``"gspo"``, else ``"token"``): ``"token"`` uses ρ_t;
    ``"sequence"`` replaces every ρ_t of sequence i by s_i = exp(1/|o_i| Σ_t log ρ_t) (GSPO, Zheng et al.
    2025, which clips s_i with ε ≈ 3e-4 / 4e-4). ``importance_weights`` ``[B, T]`` (detached, e.g. from
    :func:`truncated_importance_weights`) multiply the clipped policy term per token, before the KL term is
    added (TRL's vLLM importance-sampling correction).

    Args:
        logps: ``[B, T]`` log-probs of the sampled tokens under the current policy (with grad).
        old_logps: ``[B, T]`` under the sampling policy (pass ``logps.detach()`` when fully on-policy).
        advantages: ``[B]`` (from :func:`group_advantages`) or ``[B, T]``.
        mask: ``[B, T]`` 1 on completion tokens.
        ref_logps: ``[B, T]`` reference log-probs; required when ``beta != 0``.
        epsilon_low, epsilon_high: clip range (TRL defaults 0.2 and ε_high = ε_low).
        beta: KL coefficient (TRL default 0.0, i.e. no reference model; the paper used 0.04).

    Returns:
        ``(loss, metrics)``: a scalar (token-level losses are reduced here). Metrics (detached, token means
        over ``mask``, as TRL): ``kl`` (when beta != 0), ``clip_ratio/low_mean``, ``clip_ratio/high_mean``,
        ``clip_ratio/region_mean``.
    """
    importance_level = importance_level or _LOSS_TYPE_LEVEL.get(aggregation, "token")
    aggregation = GRPO_LOSS_TYPES.get(aggregation, aggregation)  # TRL loss_type names are accepted too
    if importance_level not in IMPORTANCE_LEVELS:
        raise ValueError(f"unknown importance_level {importance_level!r}; choose from {sorted(IMPORTANCE_LEVELS)}")
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    ratio = torch.exp(IMPORTANCE_LEVELS[importance_level](logps - old_logps, mask))
    clipped_ratio = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token = -torch.min(ratio * advantages, clipped_ratio * advantages)
    if importance_weights is not None:
        per_token = per_token * importance_weights
    metrics: dict[str, torch.Tensor] = {}
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("grpo_loss with beta != 0 needs ref_logps")
        per_token_kl = kl_penalty(logps, ref_logps, estimator="k3")
        per_token = per_token + beta * per_token_kl
        metrics["kl"] = masked_mean(per_token_kl.detach(), mask)
    loss = aggregate_token_losses(per_token, mask, aggregation=aggregation, normalizer=normalizer)
    with torch.no_grad():
        low = (ratio < 1 - epsilon_low) & (advantages < 0)
        high = (ratio > 1 + epsilon_high) & (advantages > 0)
        metrics["clip_ratio/low_mean"] = masked_mean(low.float(), mask)
        metrics["clip_ratio/high_mean"] = masked_mean(high.float(), mask)
        metrics["clip_ratio/region_mean"] = masked_mean((low | high).float(), mask)
    return loss, metrics


def truncated_importance_weights(
    old_logps: torch.Tensor, sampling_logps: torch.Tensor, mask: torch.Tensor, *, cap: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Truncated importance sampling (TIS; Yao et al. 2025, "Your efficient RL framework secretly brings you
    off-policy RL training"): tokens were drawn by an engine whose log-probs differ from the trainer's
    (vLLM kernels, bf16 decoding), so the policy-gradient term is reweighted per token by

        w_t = min(π_old(y_t) / π_sampling(y_t), C) = min(exp(log π_old - log π_sampling), C)

    (TRL ``vllm_importance_sampling_mode="token_truncate"``, ``vllm_importance_sampling_clip_max`` = C).

    Shapes: ``old_logps`` (the trainer's π_old), ``sampling_logps`` (the engine's) and ``mask`` ``[B, T]`` ->
    weights ``[B, T]`` (detached; 1 off the mask) and metrics (token means over ``mask``): ``is/mismatch``
    = mean |log π_old - log π_sampling|, ``is/weight_mean``, ``is/truncated`` (share of tokens at the cap).
    """
    with torch.no_grad():
        log_ratio = (old_logps - sampling_logps) * mask
        raw = torch.exp(log_ratio)
        weights = torch.clamp(raw, max=cap)
        metrics = {
            "is/mismatch": masked_mean(log_ratio.abs(), mask),
            "is/weight_mean": masked_mean(weights, mask),
            "is/truncated": masked_mean((raw > cap).float(), mask),
        }
    return weights, metrics
