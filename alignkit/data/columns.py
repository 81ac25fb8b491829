"""Raw row dict -> typed record: which columns mean what, and small type coercions.

Column names follow TRL (``prompt``/``chosen``/``rejected``, ``prompt``/``completion``/``label``,
``messages``); a few common alternatives are accepted where TRL has no name (rankings, RL
answers). Every column a record does not consume is kept in its ``meta``.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from alignkit.data.errors import DataError, Origin
from alignkit.data.formats import BinaryFeedback, PreferencePair, PromptOnly, Ranking, SFTExample

ALIASES = {
    "responses": ("responses", "completions"),
    "scores": ("scores", "rewards", "ratings"),
    "answer": ("answer", "solution", "ground_truth"),
}
TRUE_WORDS = {"true", "1", "yes", "y", "t"}
FALSE_WORDS = {"false", "0", "no", "n", "f"}


class Columns:
    """A row being consumed column by column; what is left over becomes ``meta``."""

    def __init__(self, value: dict):
        self.value = value
        self.used: set[str] = set()

    def has(self, name: str) -> bool:
        return any(self.value.get(alias) is not None for alias in ALIASES.get(name, (name,)))

    def take(self, name: str, *, required: bool = True) -> Any:
        aliases = ALIASES.get(name, (name,))
        present = [alias for alias in aliases if alias in self.value]
        self.used.update(present)
        # Tables (Parquet, a Dataset) hold every alias column, null where a row used another one.
        for alias in present:
            if self.value[alias] is not None:
                return self.value[alias]
        if present and required:
            raise DataError("null", field=present[0])
        if required:
            also = f" (also looked for {', '.join(repr(a) for a in aliases[1:])})" if len(aliases) > 1 else ""
            raise DataError(f"missing{also}", field=name)
        return None

    def meta(self) -> dict:
        return {key: value for key, value in self.value.items() if key not in self.used}


def split_messages(messages: Any, name: str = "messages") -> tuple[list, list]:
    """A conversation -> (prompt turns, [final assistant turn]); the last turn must be the assistant's."""
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise DataError("expected a non-empty list of messages", field=name)
    if messages[-1].get("role") != "assistant":
        raise DataError(f"last message must have role 'assistant', got {messages[-1].get('role')!r}", field=name)
    if len(messages) < 2:
        raise DataError("no prompt turns before the assistant's reply", field=name)
    return messages[:-1], messages[-1:]


def split_shared_prefix(chosen: Any, rejected: Any) -> tuple[list, list, list]:
    """Two full conversations -> (shared prompt turns, chosen rest, rejected rest).

    The implicit-prompt form TRL's ``extract_prompt`` handles. Each side keeps at least its last
    turn, so two identical conversations surface as "identical", not as an empty response.
    """
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
            hint = " (an HH-RLHF transcript? pass --data-format hh-rlhf)" if isinstance(value, str) and "Human:" in value else ""
            raise DataError(f"no 'prompt' column, so expected a full conversation (a list of messages){hint}", field=name)
    shared = 0
    limit = min(len(chosen), len(rejected)) - 1
    while shared < limit and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise DataError("missing, and 'chosen' and 'rejected' share no leading turns to use as one", field="prompt")
    return chosen[:shared], chosen[shared:], rejected[shared:]


def as_label(value: Any) -> bool:
    """KTO labels: booleans, 0/1, or words like "true"/"no" (CSV cells are always text)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    raise DataError(f"expected true or false, got {value!r}", field="label")


def as_answer(value: Any) -> str | None:
    """A reference answer as text; numbers (a GSM8K-style 42) become their text."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"expected text or a number, got {type(value).__name__}", field="answer")


def _json_list(value: Any) -> Any:
    # CSV cells hold lists as JSON text.
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _sft(row: Columns, origin: Origin | None) -> SFTExample:
    if not row.has("prompt") and row.has("messages"):
        prompt, completion = split_messages(row.take("messages"))
    else:
        prompt, completion = row.take("prompt"), row.take("completion")
    return SFTExample(prompt, completion, meta=row.meta(), origin=origin)


def _preference(row: Columns, origin: Origin | None) -> PreferencePair:
    chosen, rejected = row.take("chosen"), row.take("rejected")
    if row.has("prompt"):
        prompt = row.take("prompt")
    else:
        prompt, chosen, rejected = split_shared_prefix(chosen, rejected)
    return PreferencePair(prompt, chosen, rejected, meta=row.meta(), origin=origin)


def _ranking(row: Columns, origin: Origin | None) -> Ranking:
    prompt = row.take("prompt")
    responses, scores = _json_list(row.take("responses")), _json_list(row.take("scores"))
    return Ranking(prompt, responses, scores, meta=row.meta(), origin=origin)


def _binary(row: Columns, origin: Origin | None) -> BinaryFeedback:
    prompt, completion = row.take("prompt"), row.take("completion")
    return BinaryFeedback(prompt, completion, as_label(row.take("label")), meta=row.meta(), origin=origin)


def _prompt(row: Columns, origin: Origin | None) -> PromptOnly:
    prompt = row.take("prompt")
    answer = as_answer(row.take("answer", required=False))
    return PromptOnly(prompt, answer, meta=row.meta(), origin=origin)


ROW_CONVERTERS: dict[str, Callable[[Columns, Origin | None], Any]] = {
    "sft": _sft,
    "preference": _preference,
    "ranking": _ranking,
    "binary": _binary,
    "prompt": _prompt,
}
KINDS = tuple(ROW_CONVERTERS)


def row_to_record(value: dict, kind: str, origin: Origin | None = None):
    """Build the record of ``kind`` from one parsed row; raises DataError naming the field."""
    if kind not in ROW_CONVERTERS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    return ROW_CONVERTERS[kind](Columns(value), origin)
