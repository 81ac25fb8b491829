"""Pairwise judges: P(response a is better than response b) for each prompt."""

from alignkit.judges.base import PairwiseJudge, ScoringJudge, preference_from_scores
from alignkit.judges.reward_function import RewardFunctionJudge, pointwise
from alignkit.judges.reward_model import RewardModelJudge

__all__ = ["PairwiseJudge", "RewardFunctionJudge", "RewardModelJudge", "ScoringJudge", "pointwise", "preference_from_scores"]
