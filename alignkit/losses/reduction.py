"""Masked reductions shared by every loss (torchtune `rlhf/utils` style).

Reduction lives here once so that a loss never decides on its own how to average. Conventions:

* ``mask`` is 1 (or True) on positions that count and 0 elsewhere; it is cast to ``values.dtype``.
* A mean over an empty mask returns 0, not NaN (the count is clamped to at least 1, as TRL does).
* Under data parallelism or gradient accumulation the *local* count is the wrong denominator: a
  micro-batch's mean weighs its own tokens by 1/(its token count), so a short micro-batch's tokens
  count more than a long one's. Pass the global count (tokens or sequences summed over every
  micro-batch of every process, :func:`sum_across_processes`) as ``normalizer``; each micro-batch
  loss is then its share of the global mean, and the gradients are *summed* over micro-batches and
  processes (OpenRLHF / DAPO convention). ``alignkit.train.loop.fit`` does that bookkeeping.

Global-batch normalisation, for G micro-batches on W processes (N = Σ over all G·W of the count)::

    loss_g = Σ_{i ∈ g} l_i / N          # each micro-batch: its share of the global mean
    grad   = Σ_{processes} Σ_g ∇loss_g  # = ∇ (Σ_all l_i / N), whatever the split
"""

from collections.abc import Callable

import torch
import torch.distributed as dist

__all__ = [
    "TOKEN_AGGREGATIONS",
    "aggregate_token_losses",
    "batch_mean",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "sum_across_processes",
]


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is set.

    Shapes: ``values`` and ``mask`` broadcastable, e.g. ``[B, T]``; returns a scalar when ``dim`` is None,
    otherwise ``values`` with ``dim`` reduced (``[B]`` for ``dim=-1``).
    """
    masked = values * mask.to(values.dtype)
    return masked.sum() if dim is None else masked.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is set: sum(v·m) / max(sum(m), 1).

    Shapes: ``values`` ``[B, T]`` (any shape), ``mask`` same shape; scalar if ``dim`` is None, else ``[B]``
    for ``dim=-1`` (a per-sequence token mean).
    """
    mask = mask.to(values.dtype)
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``values`` over the masked positions (scalar), with Bessel's correction if ``unbiased``.

    Shapes: ``values`` ``[B, T]``, ``mask`` ``[B, T]``; returns a scalar.
    """
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        count = mask.sum()
        variance = variance * count / (count - 1).clamp(min=1.0)
    return variance


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalise ``values`` to zero mean and unit variance over the masked positions.

    (v - mean) / sqrt(var + eps); with ``shift_mean=False`` the mean is added back (PPO value whitening
    in TRL / torchtune). Shapes: ``values`` ``[B, T]``, ``mask`` ``[B, T]`` -> ``[B, T]``. Masked-out
    positions are transformed too; multiply by ``mask`` afterwards if they must stay zero.
    """
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask) + eps)
    return whitened if shift_mean else whitened + mean


# --- aggregation of per-token losses to one scalar -------------------------------------------------
# Each takes (per_token_losses [B, T], mask [B, T], normalizer) and returns a scalar.


def _token_mean(per_token: torch.Tensor, mask: torch.Tensor, normalizer: float | None) -> torch.Tensor:
    # Every token of the batch weighs the same (DAPO, TRL "bnpo"/"dapo"). normalizer: global token count.
    if normalizer is None:
        return masked_mean(per_token, mask)
    return masked_sum(per_token, mask) / normalizer


def _sequence_mean(per_token: torch.Tensor, mask: torch.Tensor, normalizer: float | None) -> torch.Tensor:
    # Token mean inside each sequence, then mean over sequences (original GRPO, TRL "grpo").
    # normalizer: global sequence count.
    per_sequence = masked_mean(per_token, mask, dim=-1)
    return per_sequence.mean() if normalizer is None else per_sequence.sum() / normalizer


def _constant_normalizer(per_token: torch.Tensor, mask: torch.Tensor, normalizer: float | None) -> torch.Tensor:
    # Sum divided by a constant that does not depend on lengths (Dr. GRPO, TRL "dr_grpo":
    # normalizer = batch_size * max_completion_length).
    if normalizer is None:
        raise ValueError("aggregation 'constant_normalizer' needs normalizer (e.g. batch_size * max_completion_length)")
    return masked_sum(per_token, mask) / normalizer


TOKEN_AGGREGATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, float | None], torch.Tensor]] = {
    "token_mean": _token_mean,
    "sequence_mean": _sequence_mean,
    "constant_normalizer": _constant_normalizer,
}


def aggregate_token_losses(
    per_token_losses: torch.Tensor,
    mask: torch.Tensor,
    *,
    aggregation: str = "token_mean",
    normalizer: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce per-token losses ``[B, T]`` to a scalar with one of :data:`TOKEN_AGGREGATIONS`.

    * ``"token_mean"``: sum(l·m) / sum(m); ``normalizer`` replaces sum(m) by the global token count.
    * ``"sequence_mean"``: mean_i [sum_t(l·m) / sum_t(m)]; ``normalizer`` replaces B by the global count.
    * ``"constant_normalizer"``: sum(l·m) / normalizer (required).
    """
    if aggregation not in TOKEN_AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose from {sorted(TOKEN_AGGREGATIONS)}")
    return TOKEN_AGGREGATIONS[aggregation](per_token_losses, mask, normalizer)


# --- global-batch normalisation --------------------------------------------------------------------


def batch_mean(losses: torch.Tensor, normalizer: float | torch.Tensor | None = None) -> torch.Tensor:
    """Per-example losses ``[B]`` -> scalar: ``losses.sum() / normalizer``, or ``losses.mean()`` without one.

    ``normalizer`` = examples in the *global* batch (all micro-batches, all processes), so that the
    micro-batch losses sum to the mean over the whole batch (see the module docstring).
    """
    return losses.mean() if normalizer is None else losses.sum() / normalizer


def sum_across_processes(values: dict[str, float]) -> dict[str, float]:
    """Each value summed over every process of the default process group (unchanged without one).

    Every process must call it with the same keys. float64, so token counts stay exact.
    """
    if not values or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(values)
    keys = sorted(values)
    summed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        summed = summed.cuda()
    dist.all_reduce(summed)
    return dict(zip(keys, summed.tolist()))
