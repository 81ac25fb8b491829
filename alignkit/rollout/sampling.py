"""Choosing the next token from logits: temperature, top-k, top-p, greedy; and its log-prob.

Pure functions of tensors, shared by every engine that samples itself.
"""

from __future__ import annotations

import torch


def truncate_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Logits (B, V) with every token outside the top-k and outside the top-p nucleus set to −inf.

    top-k keeps the k largest logits (0: off). top-p (Holtzman et al. 2020) keeps the smallest set
    of most likely tokens whose probability sums to ≥ p; the most likely token always stays.
    """
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(-1) - probs  # probability of the tokens ranked above each one
        drop_sorted = mass_before >= top_p  # the first token has mass_before 0: always kept
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_tokens(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (B,), logprobs (B,)) for next-token logits (B, V).

    temperature 0 is greedy (argmax). Otherwise tokens are drawn from softmax(truncate(logits / T)).
    The log-prob returned is log softmax(logits / T) at the chosen token over the full vocabulary
    (T = 1 when greedy): the quantity a trainer recomputes for π_old, so that the two can be
    compared. Top-k / top-p truncation is a sampling device and is not renormalised into it.

    Draws use the inverse CDF (one uniform per row, a cumulative sum, a binary search), which on
    CPU is an order of magnitude cheaper than ``torch.multinomial`` over a 50k vocabulary.
    """
    logits = logits.float()
    if temperature == 0:
        tokens = logits.argmax(-1)
        return tokens, torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).squeeze(-1)
    scaled = logits / temperature if temperature != 1.0 else logits
    log_norm = torch.logsumexp(scaled, -1, keepdim=True)  # (B, 1)
    if top_k or top_p < 1.0:
        probs = torch.softmax(truncate_logits(scaled, top_k=top_k, top_p=top_p), -1)
    else:
        probs = (scaled - log_norm).exp_()
    cdf = probs.cumsum(-1, dtype=torch.float64)  # float64: no drift over 50k terms
    u = 1.0 - torch.rand(logits.shape[0], 1, generator=generator, dtype=torch.float64, device=logits.device)  # (0, 1]
    tokens = torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(-1).clamp_(max=logits.shape[-1] - 1)
    return tokens, (scaled.gather(-1, tokens[:, None]) - log_norm).squeeze(-1)
