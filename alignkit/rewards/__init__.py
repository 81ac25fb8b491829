"""Reward functions ``fn(prompt, response) -> float``, usable as RL rewards or through
``alignkit.judges.RewardFunctionJudge`` as judges; plus the refusal heuristic."""

from alignkit.rewards.format import format_check, format_problems
from alignkit.rewards.length import length_penalty
from alignkit.rewards.refusal import REFUSAL_PATTERNS, refusal_detector

__all__ = ["REFUSAL_PATTERNS", "format_check", "format_problems", "length_penalty", "refusal_detector"]
