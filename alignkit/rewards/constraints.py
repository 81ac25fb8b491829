"""Instruction constraints that code can check (in the spirit of IFEval, Zhou et al. 2023):
"answer in under 50 words", "use the word 'ocean'", "end with 'Any questions?'"...

Each dataset row carries its constraints in a column (default ``constraints``): a dict, or its
JSON text, such as ``{"max_words": 50, "include": ["ocean"], "end_with": "Any questions?"}``.

| key | value | satisfied when |
|---|---|---|
| ``max_words`` / ``min_words`` | int | whitespace-separated words ≤ / ≥ value |
| ``max_sentences`` / ``min_sentences`` | int | sentences (runs ending in . ! ? or the end) ≤ / ≥ value |
| ``include`` / ``exclude`` | str or list | every / no keyword occurs as a whole word, ignoring case |
| ``mentions`` | str or list | at least one keyword occurs as a whole word, ignoring case (the answer is on topic) |
| ``case`` | ``"lower"`` or ``"upper"`` | the text has letters and no letter of the other case |
| ``bullets`` | int | exactly that many markdown bullet lines (``-``, ``*`` or ``•`` then a space) |
| ``json`` | true | the text (optionally in a ```json fence) parses as JSON |
| ``json_keys`` | list | it parses as a JSON object holding every listed key |
| ``start_with`` / ``end_with`` | str | the stripped text starts / ends with exactly that phrase |
"""

from __future__ import annotations

import json
import re
from typing import Callable

from alignkit.rewards.protocol import column, completion_text

_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")
_BULLET = re.compile(r"^\s*[-*•]\s+\S", re.MULTILINE)
_FENCE = re.compile(r"^```(?:json)?\s*\n(.*?)\n```$", re.DOTALL)


def _words(text: str) -> int:
    return len(text.split())


def _sentences(text: str) -> int:
    pieces = _SENTENCE_END.split(text)
    return sum(1 for piece in pieces if piece.strip())


def _keywords(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _occurs(keyword: str, text: str) -> bool:
    return re.search(r"(?<!\w)" + re.escape(keyword) + r"(?!\w)", text, re.IGNORECASE) is not None


def _json(text: str):
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    return json.loads(fenced.group(1) if fenced else stripped)


def _parses_as_json(text: str, _value) -> bool:
    try:
        _json(text)
    except ValueError:
        return False
    return True


def _json_has_keys(text: str, keys) -> bool:
    try:
        parsed = _json(text)
    except ValueError:
        return False
    return isinstance(parsed, dict) and all(key in parsed for key in keys)


def _case(text: str, value: str) -> bool:
    if value not in ("lower", "upper"):
        raise ValueError(f"constraint 'case' must be 'lower' or 'upper', got {value!r}")
    cased = [c for c in text if c.lower() != c.upper()]  # letters that have a case
    return bool(cased) and all(c.islower() if value == "lower" else c.isupper() for c in cased)


CHECKS: dict[str, Callable[[str, object], bool]] = {
    "max_words": lambda text, n: _words(text) <= n,
    "min_words": lambda text, n: _words(text) >= n,
    "max_sentences": lambda text, n: _sentences(text) <= n,
    "min_sentences": lambda text, n: _sentences(text) >= n,
    "include": lambda text, kws: all(_occurs(k, text) for k in _keywords(kws)),
    "exclude": lambda text, kws: not any(_occurs(k, text) for k in _keywords(kws)),
    "case": _case,
    "bullets": lambda text, n: len(_BULLET.findall(text)) == n,
    "json": _parses_as_json,
    "json_keys": _json_has_keys,
    "mentions": lambda text, kws: any(_occurs(k, text) for k in _keywords(kws)),
    "start_with": lambda text, phrase: text.strip().startswith(phrase),
    "end_with": lambda text, phrase: text.strip().endswith(phrase),
}


def constraint_failures(text: str, constraints: dict) -> list[str]:
    """The names of the constraints ``text`` breaks (unknown names raise ValueError)."""
    unknown = sorted(set(constraints) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown constraints {unknown}; known: {sorted(CHECKS)}")
    return [name for name, value in constraints.items() if not CHECKS[name](text, value)]


def instruction_constraints(
    prompts, completions, completion_ids=None, *, constraints_column: str = "constraints", all_or_nothing: bool = False, **columns
) -> list[float | None]:
    """Per completion: the fraction of its row's constraints it satisfies (or, with
    ``all_or_nothing``, 1.0 only when it satisfies all of them); None for a row without
    constraints (None or an empty dict)."""
    rows = column(columns, constraints_column, len(completions), reward="constraints")
    rewards: list[float | None] = []
    for completion, constraints in zip(completions, rows):
        if isinstance(constraints, str):
            constraints = json.loads(constraints)
        if not constraints:
            rewards.append(None)
            continue
        failed = len(constraint_failures(completion_text(completion), constraints))
        if all_or_nothing:
            rewards.append(0.0 if failed else 1.0)
        else:
            rewards.append(1.0 - failed / len(constraints))
    return rewards
