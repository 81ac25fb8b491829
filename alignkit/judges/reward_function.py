"""A judge from any reward function ``fn(prompt, response) -> float``: the higher reward wins."""

from __future__ import annotations

from typing import Callable

from alignkit.judges.base import check_lengths

RewardFunction = Callable[[list[dict], str], float]


class RewardFunctionJudge:
    """P(a better than b) = 1 if fn(a) > fn(b) + tie_tolerance, 0 if fn(a) < fn(b) − tie_tolerance,
    else 0.5. A hard comparison: reward functions (length, format, verifiers) have no calibrated
    scale that a sigmoid of the difference would respect."""

    def __init__(self, fn: RewardFunction, *, tie_tolerance: float = 0.0):
        self.fn = fn
        self.tie_tolerance = tie_tolerance

    def score(self, prompts: list[list[dict]], responses: list[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return [float(self.fn(prompt, response)) for prompt, response in zip(prompts, responses)]

    def judge(self, prompts: list[list[dict]], responses_a: list[str], responses_b: list[str]) -> list[float]:
        check_lengths(prompts, responses_a, responses_b)
        scores_a, scores_b = self.score(prompts, responses_a), self.score(prompts, responses_b)
        return [_compare(a, b, self.tie_tolerance) for a, b in zip(scores_a, scores_b)]


def _compare(score_a: float, score_b: float, tie_tolerance: float) -> float:
    if score_a > score_b + tie_tolerance:
        return 1.0
    if score_a < score_b - tie_tolerance:
        return 0.0
    return 0.5
