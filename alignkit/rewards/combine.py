"""Several reward functions combined with weights, each one's values kept for logging.

    total_i = Σ_f w_f · r_f(i)   over the functions f with a usable value for row i

A usable value is finite and not None. None means "not applicable" and is skipped, as TRL does
(``nansum`` over functions), so a row scored by a math verifier only is not dragged down by a code
reward that did not apply; a row no function applies to gets 0 (TRL's choice) and is counted in
``RewardResult.unscored_rows``. NaN or ±inf is a bug in a reward function, not a verdict: it is
never added to the total; it is counted per function (``non_finite``, also in ``metrics()``) and
logged as a warning, or raises with ``on_non_finite="raise"``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from alignkit.rewards.protocol import call_reward, reward_name

log = logging.getLogger(__name__)


@dataclass
class RewardResult:
    """The combined rewards of one batch of N completions."""

    total: list[float]  # (N,) weighted sum of the usable values of each row
    per_function: dict[str, list[float | None]]  # name -> (N,) values as returned (None, NaN kept)
    weights: dict[str, float]
    non_finite: dict[str, int] = field(default_factory=dict)  # name -> count of NaN / ±inf values
    not_applicable: dict[str, int] = field(default_factory=dict)  # name -> count of None values
    unscored_rows: int = 0  # rows that no function gave a usable value (total 0 there)

    def metrics(self) -> dict[str, float]:
        """Scalars to log: ``reward`` (mean total), ``reward_std``, and per function
        ``rewards/<name>/mean`` and ``/std`` over its usable values, plus counts of None and
        non-finite values where there are any."""
        metrics = {"reward": _mean(self.total), "reward_std": _std(self.total)}
        for name, values in self.per_function.items():
            usable = [v for v in values if v is not None and math.isfinite(v)]
            metrics[f"rewards/{name}/mean"] = _mean(usable)
            metrics[f"rewards/{name}/std"] = _std(usable)
            if self.not_applicable.get(name):
                metrics[f"rewards/{name}/not_applicable"] = float(self.not_applicable[name])
            if self.non_finite.get(name):
                metrics[f"rewards/{name}/non_finite"] = float(self.non_finite[name])
        if self.unscored_rows:
            metrics["rewards/unscored_rows"] = float(self.unscored_rows)
        return metrics


class RewardSet:
    """Call several reward functions on one batch and combine them.

    ``functions``: a list (each named by ``reward_name``; names must differ) or a mapping
    name -> function. ``weights``: one per function, in the same order (default 1 each), or a
    mapping by name. ``on_non_finite``: ``"skip"`` (leave out of the total, count and warn) or
    ``"raise"``.
    """

    def __init__(
        self,
        functions: Sequence[Callable] | Mapping[str, Callable],
        *,
        weights: Sequence[float] | Mapping[str, float] | None = None,
        on_non_finite: str = "skip",
    ):
        if isinstance(functions, Mapping):
            named = dict(functions)
        else:
            names = [reward_name(fn) for fn in functions]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"two reward functions are both named {duplicates}: pass a mapping name -> function")
            named = dict(zip(names, functions))
        if not named:
            raise ValueError("a RewardSet needs at least one reward function")
        if weights is None:
            weights = {name: 1.0 for name in named}
        elif not isinstance(weights, Mapping):
            weights = list(weights)
            if len(weights) != len(named):
                raise ValueError(f"{len(weights)} weights for {len(named)} reward functions")
            weights = dict(zip(named, weights))
        if set(weights) != set(named):
            raise ValueError(f"weights are for {sorted(weights)} but the functions are {sorted(named)}")
        if not all(math.isfinite(float(w)) for w in weights.values()):
            raise ValueError(f"weights must be finite, got {weights}")
        if on_non_finite not in ("skip", "raise"):
            raise ValueError(f"on_non_finite must be 'skip' or 'raise', got {on_non_finite!r}")
        self.functions = named
        self.weights = {name: float(weights[name]) for name in named}
        self.on_non_finite = on_non_finite

    def __call__(self, prompts, completions, completion_ids=None, **columns) -> RewardResult:
        """Every dataset column in ``columns`` reaches every function under its own name."""
        n = len(completions)
        if len(prompts) != n or (completion_ids is not None and len(completion_ids) != n):
            ids = "no" if completion_ids is None else len(completion_ids)
            raise ValueError(f"{len(prompts)} prompts, {n} completions and {ids} completion_ids: need one of each per row")
        per_function = {
            name: call_reward(fn, prompts, completions, completion_ids, **columns) for name, fn in self.functions.items()
        }
        total, scored = [0.0] * n, [False] * n
        non_finite, not_applicable = {}, {}
        for name, values in per_function.items():
            bad = [i for i, v in enumerate(values) if v is not None and not math.isfinite(v)]
            if bad:
                message = f"reward function {name!r} returned non-finite values at rows {bad[:10]}: {[values[i] for i in bad[:10]]}"
                if self.on_non_finite == "raise":
                    raise ValueError(message)
                log.warning("%s (left out of the total)", message)
                non_finite[name] = len(bad)
            not_applicable[name] = sum(v is None for v in values)
            for i, value in enumerate(values):
                if value is not None and math.isfinite(value):
                    total[i] += self.weights[name] * value
                    scored[i] = True
        return RewardResult(
            total=total,
            per_function=per_function,
            weights=dict(self.weights),
            non_finite=non_finite,
            not_applicable=not_applicable,
            unscored_rows=scored.count(False),
        )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _std(values: list[float]) -> float:
    """Population standard deviation (what a logger of a batch reports); NaN when empty."""
    if not values:
        return math.nan
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
