"""Penalise completions longer than a budget (a guard against the length exploitation that
preference optimisation is known for: Singhal et al. 2023, "A Long Way to Go")."""

from __future__ import annotations

from alignkit.rewards.protocol import completion_text


def length_penalty(
    prompts, completions, completion_ids=None, *, max_words: int = 200, weight: float = 1.0, unit: str = "words", **columns
) -> list[float]:
    """r = −weight · max(0, L − max_words) / max_words per completion.

    0 within the budget, then linear in the excess: −weight at twice the budget. L counts
    whitespace-separated words by default (``unit="words"``), so the reward does not depend on a
    tokenizer; ``unit="tokens"`` counts the policy's ``completion_ids`` instead (``max_words`` is
    then a token budget). Bind options with ``functools.partial(length_penalty, max_words=50)``.
    """
    if max_words <= 0:
        raise ValueError(f"max_words must be positive, got {max_words}")
    if unit == "words":
        lengths = [len(completion_text(c).split()) for c in completions]
    elif unit == "tokens":
        if completion_ids is None:
            raise ValueError("length_penalty(unit='tokens') needs completion_ids")
        lengths = [len(ids) for ids in completion_ids]
    else:
        raise ValueError(f"unit must be 'words' or 'tokens', got {unit!r}")
    return [-weight * (length - max_words) / max_words if length > max_words else 0.0 for length in lengths]
