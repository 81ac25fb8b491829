"""Penalise responses longer than a budget (a guard against the length exploitation that
preference optimisation is known for: Singhal et al. 2023, "A Long Way to Go")."""

from __future__ import annotations


def length_penalty(prompt, response: str, *, max_words: int = 200, weight: float = 1.0) -> float:
    """r = −weight · max(0, words − max_words) / max_words, with words = len(response.split()).

    0 within the budget, then linear in the excess: −weight at twice the budget. Counts
    whitespace-separated words so the reward does not depend on a tokenizer. ``prompt`` is
    unused (it is there so the function fits ``fn(prompt, response)``); bind the options with
    ``functools.partial(length_penalty, max_words=50)``.
    """
    if max_words <= 0:
        raise ValueError(f"max_words must be positive, got {max_words}")
    words = len(response.split())
    return -weight * max(0, words - max_words) / max_words
