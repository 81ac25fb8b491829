"""An ensemble of reward models (or any reward functions) reduced to one conservative reward.

Optimising one reward model exploits its errors; several models trained with different seeds
or data disagree exactly where they are unreliable. Coste et al. 2024, "Reward Model Ensembles
Help Mitigate Overoptimization": worst-case (``min``) and uncertainty-weighted
(``mean_minus_std``: mean − k·std, a penalty on disagreement; the paper uses the variance) both
reduce overoptimisation compared with a single model; ``mean`` only averages out noise.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from alignkit.rewards.protocol import call_reward


def _mean(values: list[float], k: float) -> float:
    return sum(values) / len(values)


def _min(values: list[float], k: float) -> float:
    return min(values)


def _mean_minus_std(values: list[float], k: float) -> float:
    """mean − k·std with the population std (divide by M): the spread of these M models."""
    mean = sum(values) / len(values)
    return mean - k * math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


REDUCTIONS: dict[str, Callable[[list[float], float], float]] = {
    "mean": _mean,
    "min": _min,
    "mean_minus_std": _mean_minus_std,
}


class RewardEnsemble:
    """Calls every member (a reward function, e.g. ``RewardModelReward``) on the batch and
    reduces each row's values with ``reduce`` (``mean``, ``min`` or ``mean_minus_std`` with
    ``k``). Members returning None for a row are left out of its reduction; a row with no values
    is None."""

    def __init__(self, members: Sequence[Callable], *, reduce: str = "mean", k: float = 1.0, name: str = "reward_ensemble"):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {sorted(REDUCTIONS)}, got {reduce!r}")
        self.members = list(members)
        self.reduce = reduce
        self.k = k
        self.name = name

    def __call__(self, prompts, completions, completion_ids=None, **columns) -> list[float | None]:
        per_member = [call_reward(m, prompts, completions, completion_ids, **columns) for m in self.members]
        reduction = REDUCTIONS[self.reduce]
        rewards: list[float | None] = []
        for row in zip(*per_member):
            values = [v for v in row if v is not None]
            rewards.append(reduction(values, self.k) if values else None)
        return rewards
