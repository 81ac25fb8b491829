"""Best-of-N accuracy of a selection rule, from one pool of samples per problem.

Each problem has M samples (M a multiple of every N compared). For a given N the pool is cut into
M/N disjoint groups in sampling order; the rule picks one sample per group, and the problem's
accuracy at N is the share of its groups whose pick is correct. Reusing one pool for N = 1, 4, 16
keeps the comparison paired (every method sees the same samples) and costs M samples per problem,
not 21. N = 1 is the plain pass@1 of the sampler, whatever the rule.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from alignkit.bon.selection import best_index, majority_index
from alignkit.eval.metrics import wilson_interval

Rule = Callable[[list[int], dict], int | None]
"""(indices of a group's samples, the problem's per-sample columns) -> the chosen index, or None."""


def by_score(name: str) -> Rule:
    """The group's argmax of the column ``name`` (a scorer's scores)."""

    def rule(group: list[int], columns: dict) -> int | None:
        picked = best_index([columns[name][i] for i in group])
        return None if picked is None else group[picked]

    return rule


def by_vote(group: list[int], columns: dict) -> int | None:
    """Majority vote over the group's extracted answers."""
    picked = majority_index([columns["answer"][i] for i in group])
    return None if picked is None else group[picked]


def at_random(seed: int = 0) -> Rule:
    rng = random.Random(seed)
    return lambda group, columns: rng.choice(group)


def accuracy_at(columns: dict, rule: Rule, n: int) -> float:
    """One problem's accuracy at N: the share of its disjoint groups of ``n`` whose pick is
    ``columns["correct"]`` (no pick counts as wrong)."""
    m = len(columns["correct"])
    if m % n:
        raise ValueError(f"{m} samples do not split into groups of {n}")
    groups = [list(range(start, start + n)) for start in range(0, m, n)]
    picks = [rule(group, columns) for group in groups]
    return sum(p is not None and bool(columns["correct"][p]) for p in picks) / len(groups)


def table(problems: Sequence[dict], rules: dict[str, Rule], ns: Sequence[int]) -> dict[str, dict[int, dict]]:
    """{rule: {N: {"accuracy", "ci_low", "ci_high", "problems"}}}; the interval counts problems
    (each problem's accuracy at N is a mean over its groups), so it is conservative for N < M."""
    out: dict[str, dict[int, dict]] = {}
    for name, rule in rules.items():
        out[name] = {}
        for n in ns:
            per_problem = [accuracy_at(columns, rule, n) for columns in problems]
            mean = sum(per_problem) / len(per_problem)
            low, high = wilson_interval(mean * len(per_problem), len(per_problem))
            out[name][n] = {"accuracy": mean, "ci_low": low, "ci_high": high, "problems": len(per_problem)}
    return out
