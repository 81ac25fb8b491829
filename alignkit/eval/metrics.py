"""Evaluation metrics on plain lists and tensors: no model needed, each testable by hand.

- ``pairwise_win_rate``: position-debiased win rate with a Wilson 95 % interval.
- ``kl_from_samples``: Monte-Carlo KL(π‖π_ref) from sequences sampled from π (k1 and k3).
- ``length_drift``, ``distinct_n``, ``refusal_rate``: what preference optimisation tends to
  change besides quality — length, diversity and how often the model says no.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch

Z_95 = 1.959963984540054  # Φ⁻¹(0.975): the two-sided 95 % normal quantile


# ---------------------------------------------------------------- win rate


def position_debiased_scores(p_ab: Sequence[float], p_ba: Sequence[float]) -> list[float]:
    """Per prompt s = (p_ab + (1 − p_ba)) / 2, where p_ab = P(a ≻ b) with a shown first and
    p_ba = P(b ≻ a) with b shown first. A judge that always prefers the first position
    (p_ab = p_ba = 1) gives s = 0.5: its bias cancels instead of counting as a win."""
    if len(p_ab) != len(p_ba):
        raise ValueError(f"{len(p_ab)} judgements in order (a, b) but {len(p_ba)} in order (b, a)")
    for p in (*p_ab, *p_ba):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"judge probabilities must lie in [0, 1], got {p}")
    return [(ab + (1.0 - ba)) / 2.0 for ab, ba in zip(p_ab, p_ba)]


def wilson_interval(successes: float, n: int, *, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion p̂ = successes / n (Wilson 1927):

        centre = (p̂ + z²/(2n)) / (1 + z²/n)
        half   = z / (1 + z²/n) · sqrt(p̂(1 − p̂)/n + z²/(4n²))

    Unlike the normal (Wald) interval it stays inside [0, 1] and is not degenerate at p̂ = 0 or
    1, which matters for the small eval sets alignment runs use.
    """
    if n <= 0:
        raise ValueError("a proportion needs n >= 1")
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(max(p * (1.0 - p), 0.0) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class WinRate:
    """How often a beat b: win_rate = (wins + 0.5·ties) / n, with a 95 % Wilson interval."""

    win_rate: float
    ci_low: float
    ci_high: float
    wins: int
    losses: int
    ties: int
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


def pairwise_win_rate(p_ab: Sequence[float], p_ba: Sequence[float], *, tie_margin: float = 0.0) -> WinRate:
    """Win rate of a over b from a judge asked in both orders.

    Per prompt, s = (p_ab + (1 − p_ba)) / 2 (``position_debiased_scores``); the prompt is a win
    when s > 0.5 + tie_margin, a loss when s < 0.5 − tie_margin, else a tie. The rate counts a
    tie as half a win, win_rate = (wins + 0.5·ties) / n, and its 95 % interval is the Wilson
    score interval of that proportion over n prompts (ties as half-successes: a slightly
    conservative choice, since a tie has less variance than a coin flip). Wilson, not a
    bootstrap: closed form, deterministic, and well behaved at small n and at rates near 0 or 1.
    """
    scores = position_debiased_scores(p_ab, p_ba)
    if not scores:
        raise ValueError("no judgements: a win rate needs at least one prompt")
    wins = sum(s > 0.5 + tie_margin for s in scores)
    losses = sum(s < 0.5 - tie_margin for s in scores)
    n = len(scores)
    ties = n - wins - losses
    rate = (wins + 0.5 * ties) / n
    low, high = wilson_interval(wins + 0.5 * ties, n)
    return WinRate(rate, low, high, wins, losses, ties, n)


# ---------------------------------------------------------------- KL from samples


def _rows(logps) -> list[torch.Tensor]:
    """Per-sequence 1-D float64 tensors from a (B,) / (B, T) tensor or (ragged) nested lists."""
    if isinstance(logps, torch.Tensor):
        logps = logps.detach().to("cpu", torch.float64)
        if logps.dim() == 1:
            return list(logps[:, None])
        if logps.dim() == 2:
            return list(logps)
        raise ValueError(f"log-probs must be (B,) or (B, T), got shape {tuple(logps.shape)}")
    return [torch.as_tensor(row, dtype=torch.float64).reshape(-1) for row in logps]


def _mean_and_stderr(values: torch.Tensor) -> tuple[float, float | None]:
    n = values.numel()
    stderr = float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else None
    return float(values.mean()), stderr


def kl_from_samples(policy_logps, ref_logps) -> dict:
    """Estimate KL(π‖π_ref) = E_{y∼π}[log π(y) − log π_ref(y)] from sequences y sampled from π.

    Inputs: the log-probs of each sampled response under π and under π_ref, either per token —
    a (B, T) tensor that is 0 outside the response (``response_token_logps`` returns this), or
    B lists — or per sequence, (B,). With the per-token log ratio ℓ_t = log π − log π_ref:

        k1 = Σ_t ℓ_t                          unbiased, but can be negative per sample
        k3 = Σ_t (exp(−ℓ_t) − 1 + ℓ_t)        unbiased, ≥ 0, lower variance

    (Schulman 2020, "Approximating KL divergence"). k3 summed over tokens is unbiased for the
    sequence KL because each term is unbiased for the per-token KL given its prefix; from
    per-sequence sums k3 is the same formula on the sequence log ratio (higher variance).
    Positions where both inputs are 0 (padding) add 0 to both estimators.

    Returns {"k1", "k1_stderr", "k3", "k3_stderr", "n"}: means over the B sequences and their
    standard errors std/√B (None when B = 1).
    """
    policy_rows, ref_rows = _rows(policy_logps), _rows(ref_logps)
    if len(policy_rows) != len(ref_rows) or not policy_rows:
        raise ValueError(f"need the same non-zero number of sequences, got {len(policy_rows)} and {len(ref_rows)}")
    k1, k3 = [], []
    for policy_row, ref_row in zip(policy_rows, ref_rows):
        if policy_row.shape != ref_row.shape:
            raise ValueError(f"per-token log-probs differ in length: {tuple(policy_row.shape)} vs {tuple(ref_row.shape)}")
        log_ratio = policy_row - ref_row  # ℓ_t = log π − log π_ref
        k1.append(log_ratio.sum())
        k3.append((torch.expm1(-log_ratio) + log_ratio).sum())
    k1_mean, k1_stderr = _mean_and_stderr(torch.stack(k1))
    k3_mean, k3_stderr = _mean_and_stderr(torch.stack(k3))
    return {"k1": k1_mean, "k1_stderr": k1_stderr, "k3": k3_mean, "k3_stderr": k3_stderr, "n": len(k1)}


# ---------------------------------------------------------------- length, diversity, refusals


def _length(text: str, tokenizer) -> int:
    if tokenizer is None:
        return len(text.split())
    return len(tokenizer.encode(text, add_special_tokens=False))


def length_drift(base_texts: Sequence[str], policy_texts: Sequence[str], tokenizer=None) -> dict:
    """Mean response length of base and policy and their ratio policy / base.

    Lengths are tokens when a tokenizer is given, whitespace words otherwise. A ratio well above
    1 after preference training is the classic sign of length exploitation. The ratio is None
    when the base mean is 0.
    """
    if not base_texts or not policy_texts:
        raise ValueError("length drift needs at least one base and one policy text")
    base_mean = sum(_length(t, tokenizer) for t in base_texts) / len(base_texts)
    policy_mean = sum(_length(t, tokenizer) for t in policy_texts) / len(policy_texts)
    return {
        "base_mean_length": base_mean,
        "policy_mean_length": policy_mean,
        "ratio": policy_mean / base_mean if base_mean > 0 else None,
        "unit": "tokens" if tokenizer is not None else "words",
    }


def distinct_n(texts: Sequence[str], n: int, *, tokenize: Callable[[str], list[str]] = str.split) -> float:
    """distinct-n = |unique n-grams| / |n-grams|, pooled over all texts (Li et al. 2016, "A
    Diversity-Promoting Objective Function for Neural Conversation Models"). N-grams do not cross
    text boundaries; words come from ``tokenize`` (whitespace split, case kept). 0.0 when the
    texts hold no n-gram at all."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    total, unique = 0, set()
    for text in texts:
        words = tokenize(text)
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else 0.0


def refusal_rate(texts: Sequence[str], *, detector: Callable[[str], bool] | None = None) -> float:
    """Fraction of ``texts`` the detector flags (default: the keyword heuristic
    ``alignkit.rewards.refusal_detector``)."""
    if detector is None:
        from alignkit.rewards.refusal import refusal_detector as detector
    if not texts:
        raise ValueError("refusal rate of no texts is undefined")
    return sum(bool(detector(t)) for t in texts) / len(texts)
