"""What a judge is: a callable comparison of two responses to the same prompt.

A judge returns, per prompt, P(a better than b) in [0, 1], with 0.5 a tie. A judge is allowed to
be position-biased (an LLM judge often prefers whichever answer comes first); evaluation cancels
that by asking both orders (see ``alignkit.eval.metrics.pairwise_win_rate``).
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable


@runtime_checkable
class PairwiseJudge(Protocol):
    def judge(self, prompts: list[list[dict]], responses_a: list[str], responses_b: list[str]) -> list[float]:
        """P(responses_a[i] better than responses_b[i] for prompts[i]), each in [0, 1]."""
        ...


@runtime_checkable
class ScoringJudge(PairwiseJudge, Protocol):
    """A judge built on a pointwise score (reward model, reward function): it can also report
    each response's reward, which evaluation averages per model."""

    def score(self, prompts: list[list[dict]], responses: list[str]) -> list[float]:
        """One scalar reward per (prompt, response)."""
        ...


def preference_from_scores(scores_a: list[float], scores_b: list[float]) -> list[float]:
    """Bradley-Terry preference σ(r_a − r_b) per pair (0.5 when the rewards are equal)."""
    if len(scores_a) != len(scores_b):
        raise ValueError(f"{len(scores_a)} scores for a but {len(scores_b)} for b")
    return [_sigmoid(a - b) for a, b in zip(scores_a, scores_b)]


def _sigmoid(x: float) -> float:
    # Split by sign so exp never overflows for large |x|.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def check_lengths(prompts, responses_a, responses_b) -> None:
    if not len(prompts) == len(responses_a) == len(responses_b):
        raise ValueError(
            f"need one response of each side per prompt: {len(prompts)} prompts, "
            f"{len(responses_a)} a-responses, {len(responses_b)} b-responses"
        )
