"""Choosing one of N samples: by the highest score, or by majority vote over final answers.

Pure functions of lists, so they are tested without a model. Ties go to the earliest sample (the
engine's order is the sampling order, so that is a fair coin); a sample a scorer could not score
(None) is never chosen over one it scored.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Sequence

ANSWER = re.compile(r"answer\s*(?:is)?\s*[:=]?\s*\$?\s*(?:\\boxed\{)?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def best_index(scores: Sequence[float | None]) -> int | None:
    """argmax over the scored samples (the first on ties); None when nothing was scored."""
    scored = [(s, -i) for i, s in enumerate(scores) if s is not None]
    return -max(scored)[1] if scored else None


def extract_answer(text: str) -> str | None:
    """The final answer of a solution for voting: the number after the last "Answer:" (or "the
    answer is"), else the last number in the text; commas dropped. None when there is no number."""
    found = ANSWER.findall(text)
    value = found[-1] if found else (NUMBER.findall(text) or [None])[-1]
    return None if value is None else value.replace(",", "")


def majority_index(answers: Sequence[str | None]) -> int | None:
    """The first sample whose answer is the most common one (ties: the answer seen first);
    None when no sample has an answer (self-consistency, Wang et al. 2023)."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    winner = next(a for a in answers if a is not None and counts[a] == top)
    return answers.index(winner)


SELECTORS: dict[str, Callable[[Sequence], int | None]] = {"best": best_index, "majority": majority_index}
