"""K-way rankings -> pairwise preferences.

A ranking of K responses implies K(K-1)/2 pairwise preferences (InstructGPT, Ouyang et al.
2022, trains its reward model on all of them). A pair whose scores tie says nothing about which
response is better, so it is skipped — and counted, so nothing disappears silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


def pair_indices(scores: list[float]) -> tuple[list[tuple[int, int]], int]:
    """``([(winner, loser), ...], n_ties)`` for every pair i < j of ``scores``.

    The order is deterministic (i, j ascending), so the same ranking always gives the same pairs.
    """
    pairs, n_ties = [], 0
    for i in range(len(scores)):
        for j in range(i + 1, len(scores)):
            if scores[i] == scores[j]:
                n_ties += 1
            elif scores[i] > scores[j]:
                pairs.append((i, j))
            else:
                pairs.append((j, i))
    return pairs, n_ties


@dataclass(frozen=True)
class RankingPairs:
    pairs: list  # list[PreferencePair]
    n_rankings: int
    n_ties: int  # pairs skipped because both responses had the same score


def rankings_to_pairs(rankings: list) -> RankingPairs:
    """Expand every :class:`~alignkit.data.formats.Ranking` into its preference pairs."""
    pairs, n_ties = [], 0
    for ranking in rankings:
        pairs.extend(ranking.to_pairs())
        n_ties += ranking.n_ties
    if n_ties:
        log.info("rankings -> pairs: %d rankings gave %d pairs; %d tied pairs skipped", len(rankings), len(pairs), n_ties)
    return RankingPairs(pairs=pairs, n_rankings=len(rankings), n_ties=n_ties)
