"""Per-token KL estimators shared by PPO (KL in the reward) and GRPO (KL in the loss).

Schulman, "Approximating KL Divergence" (2020, joschu.net/blog/kl-approx.html). With tokens sampled from
the policy π and log r = log π_ref - log π:

* k1 = -log r                  unbiased, high variance, can be negative (PPO-RLHF reward penalty, RLOO)
* k2 = ½ (log r)²              biased, low variance, ≥ 0
* k3 = (r - 1) - log r         unbiased, low variance, ≥ 0 (GRPO, DeepSeekMath Eq. 4)

All estimate KL(π || π_ref) in expectation over tokens sampled from π.
"""

from collections.abc import Callable

import torch

__all__ = ["KL_ESTIMATORS", "kl_penalty"]


def _k1(log_ratio: torch.Tensor) -> torch.Tensor:
    return -log_ratio


def _k2(log_ratio: torch.Tensor) -> torch.Tensor:
    return 0.5 * log_ratio**2


def _k3(log_ratio: torch.Tensor) -> torch.Tensor:
    return torch.exp(log_ratio) - log_ratio - 1


# Each maps log r = ref_logps - logps to the per-token estimate.
KL_ESTIMATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"k1": _k1, "k2": _k2, "k3": _k3}


def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor, *, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π || π_ref) from the log-probs of the sampled tokens.

    Shapes: ``logps`` (policy) and ``ref_logps`` ``[B, T]`` (any matching shape) -> the same shape. Mask and
    reduce the result with :mod:`alignkit.losses.reduction`. Gradients flow through both inputs.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; choose from {sorted(KL_ESTIMATORS)}")
    return KL_ESTIMATORS[estimator](ref_logps - logps)
