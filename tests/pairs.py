"""Synthetic encoded examples for trainer tests (the data layer has its own tests)."""

from dataclasses import dataclass, field

import torch


@dataclass
class Pair:
    prompt_ids: list
    chosen_ids: list
    rejected_ids: list
    meta: dict = field(default_factory=dict)


@dataclass
class Completion:
    prompt_ids: list
    completion_ids: list
    label: bool = True
    meta: dict = field(default_factory=dict)


def random_ids(g, low, high):
    n = int(torch.randint(low, high, (1,), generator=g))
    return torch.randint(3, 2000, (n,), generator=g).tolist()


def make_pairs(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [Pair(random_ids(g, 3, 8), random_ids(g, 2, 9), random_ids(g, 2, 9)) for _ in range(n)]


def make_completions(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [Completion(random_ids(g, 3, 8), random_ids(g, 2, 9), label=bool(i % 2)) for i in range(n)]
