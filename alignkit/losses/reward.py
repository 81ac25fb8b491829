"""Reward modelling: the Bradley-Terry pairwise loss and conservative reward ensembles."""

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["ENSEMBLE_MODES", "bradley_terry_loss", "ensemble_reward"]


def bradley_terry_loss(
    *,
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | float | None = None,
    center_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Bradley-Terry reward-model loss with optional margin and reward centering.

    loss_i = -log σ(r_w - r_l - m_i) + c · (r_w + r_l)²

    * Bradley & Terry (1952); as a reward-model loss: Ouyang et al. 2022 (InstructGPT, Eq. 1).
    * Margin m_i (e.g. from preference strength): Touvron et al. 2023 (Llama 2, Eq. 2).
    * Centering term c·(r_w + r_l)²: Eisenstein et al. 2023 ("Helping or Herding?"), which pushes the
      rewards of a pair to sum to zero so the reward scale stays identifiable. Identical to TRL's
      ``RewardTrainer`` ``center_rewards_coefficient``: ``c * mean((r_w + r_l) ** 2)`` added to the mean loss.

    Args:
        chosen_rewards: ``[B]`` scalar rewards of the preferred responses.
        rejected_rewards: ``[B]`` rewards of the dispreferred responses.
        margin: ``[B]`` or scalar margin m (None = 0).
        center_coef: c ≥ 0; TRL's ``center_rewards_coefficient`` (None there means 0 here).

    Returns:
        ``(losses [B], metrics)``; metrics are detached batch means: ``accuracy`` (r_w > r_l),
        ``margin`` (r_w - r_l), ``rewards/chosen``, ``rewards/rejected``.
    """
    difference = chosen_rewards - rejected_rewards
    logits = difference if margin is None else difference - margin
    losses = -F.logsigmoid(logits)
    if center_coef:
        losses = losses + center_coef * (chosen_rewards + rejected_rewards) ** 2
    difference = difference.detach()
    metrics = {
        "accuracy": (difference > 0).float().mean(),
        "margin": difference.mean(),
        "rewards/chosen": chosen_rewards.detach().mean(),
        "rewards/rejected": rejected_rewards.detach().mean(),
    }
    return losses, metrics


# Each takes rewards [K, B] (K ensemble members) and k, and returns [B].
# The spread is the population statistic over the K members (correction=0), as Coste et al. use.
ENSEMBLE_MODES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "mean": lambda rewards, k: rewards.mean(dim=0),
    # Worst-case optimisation (WCO).
    "min": lambda rewards, k: rewards.min(dim=0).values,
    "mean_minus_std": lambda rewards, k: rewards.mean(dim=0) - k * rewards.std(dim=0, correction=0),
    # Uncertainty-weighted optimisation (UWO) exactly as in the paper: mean - λ·variance.
    "mean_minus_var": lambda rewards, k: rewards.mean(dim=0) - k * rewards.var(dim=0, correction=0),
}


def ensemble_reward(rewards: torch.Tensor, *, mode: str = "mean", k: float = 1.0) -> torch.Tensor:
    """Combine the rewards of K reward models into one conservative reward (Coste et al. 2023,
    "Reward Model Ensembles Help Mitigate Overoptimization").

    * ``"mean"``: (1/K) Σ_k r_k — mean optimisation.
    * ``"min"``: min_k r_k — worst-case optimisation (WCO).
    * ``"mean_minus_std"``: mean - k·std_k — an uncertainty penalty in reward units.
    * ``"mean_minus_var"``: mean - k·var_k — the paper's uncertainty-weighted optimisation (UWO, k = λ).

    Args:
        rewards: ``[K, B]`` rewards, one row per ensemble member.
        mode: a key of :data:`ENSEMBLE_MODES`.
        k: penalty coefficient for the uncertainty modes.

    Returns:
        ``[B]`` combined rewards (gradients flow if ``rewards`` requires grad).
    """
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"unknown ensemble mode {mode!r}; choose from {sorted(ENSEMBLE_MODES)}")
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [K, B], got shape {tuple(rewards.shape)}")
    return ENSEMBLE_MODES[mode](rewards, k)
