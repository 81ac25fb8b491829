"""Supervised fine-tuning: token cross-entropy on response tokens only."""

import torch

from alignkit.losses.reduction import masked_mean, masked_sum

__all__ = ["sft_loss"]


def sft_loss(
    *,
    token_logps: torch.Tensor,
    response_mask: torch.Tensor,
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative log-likelihood of the response tokens (prompt tokens are masked out).

    loss = - sum_{i,t} m_{i,t} · log π(y_{i,t} | x_i, y_{i,<t}) / N

    Normaliser N: by default the number of response tokens in this batch (a token mean, as TRL's
    ``SFTTrainer`` and the DPO ``"sft"`` loss do). Under data parallelism or gradient accumulation pass
    ``normalizer`` = response tokens in the *global* batch, so that each token weighs the same whatever
    micro-batch it lands in (the sum of the micro-batch losses is then the global token mean).

    Args:
        token_logps: ``[B, T]`` log-prob of each target token (already shifted: position t scores token t).
        response_mask: ``[B, T]`` 1 on response tokens that count, 0 on prompt and padding.
        normalizer: optional constant denominator (global response-token count).

    Returns:
        ``(loss, metrics)``: ``loss`` is a scalar, already reduced (token-level losses are reduced here, not
        per example). Metrics (detached): ``nll`` (token-mean NLL of this batch), ``num_tokens``, and
        ``nll/per_example`` (``[B]``, token-mean NLL per sequence).
    """
    nll = -token_logps
    loss = masked_mean(nll, response_mask) if normalizer is None else masked_sum(nll, response_mask) / normalizer
    with torch.no_grad():
        metrics = {
            "nll": masked_mean(nll, response_mask).detach(),
            "num_tokens": response_mask.sum().detach().to(token_logps.dtype),
            "nll/per_example": masked_mean(nll, response_mask, dim=-1).detach(),
        }
    return loss, metrics
