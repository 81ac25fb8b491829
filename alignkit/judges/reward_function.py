"""A judge from any reward function of the rewards protocol: the higher reward wins.

The function is called the way a trainer calls it (``alignkit.rewards.protocol``):
``fn(prompts=..., completions=..., completion_ids=None)``, with each response in the prompt's
format — a string for a string prompt, ``[{"role": "assistant", "content": response}]`` for a
conversational one (TRL's convention). A judge has no policy tokenizer, so ``completion_ids`` is
None. A per-row function ``fn(prompt, response) -> float`` fits through ``pointwise(fn)``.
"""

from __future__ import annotations

import functools
from typing import Callable

from alignkit.judges.base import check_lengths
from alignkit.rewards.protocol import call_reward


def pointwise(fn: Callable[..., float]) -> Callable:
    """Wrap ``fn(prompt, response_text) -> float`` as a reward function of the protocol."""
    from alignkit.rewards.protocol import completion_text

    @functools.wraps(fn)
    def reward(prompts, completions, completion_ids=None, **columns):
        return [fn(prompt, completion_text(completion)) for prompt, completion in zip(prompts, completions)]

    return reward


class RewardFunctionJudge:
    order_invariant = True
    """A pointwise score: the order the responses are shown in cannot matter."""
    """P(a better than b) = 1 if fn(a) > fn(b) + tie_tolerance, 0 if fn(a) < fn(b) − tie_tolerance,
    else 0.5 (also when either reward is None: not applicable). A hard comparison: reward
    functions (length, format, verifiers) have no calibrated scale that a sigmoid of the
    difference would respect. ``columns``: dataset columns the function reads (one value per
    prompt, e.g. ``answer=[...]`` for the math reward)."""

    def __init__(self, fn: Callable, *, tie_tolerance: float = 0.0, **columns):
        self.fn = fn
        self.tie_tolerance = tie_tolerance
        self.columns = columns

    def score(self, prompts: list, responses: list[str]) -> list[float | None]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        completions = [r if isinstance(p, str) else [{"role": "assistant", "content": r}] for p, r in zip(prompts, responses)]
        return call_reward(self.fn, list(prompts), completions, None, **self.columns)

    def judge(self, prompts: list, responses_a: list[str], responses_b: list[str]) -> list[float]:
        check_lengths(prompts, responses_a, responses_b)
        scores_a, scores_b = self.score(prompts, responses_a), self.score(prompts, responses_b)
        return [_compare(a, b, self.tie_tolerance) for a, b in zip(scores_a, scores_b)]


def _compare(score_a: float | None, score_b: float | None, tie_tolerance: float) -> float:
    if score_a is None or score_b is None:
        return 0.5
    if score_a > score_b + tie_tolerance:
        return 1.0
    if score_a < score_b - tie_tolerance:
        return 0.0
    return 0.5
