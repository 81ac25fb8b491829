"""Typed records for every kind of alignment data, in TRL's two shapes.

Shapes (kept exactly as given, never converted):

- **standard**: ``prompt`` and every response are plain strings; tokenised by concatenation.
- **conversational**: ``prompt`` is a list of ``{"role", "content"}`` messages and every
  response is a list of messages ending with the assistant's reply (usually exactly one
  ``{"role": "assistant", ...}``); tokenised through the tokenizer's chat template.

Every record validates itself on construction and raises :class:`DataError` naming the bad
field; readers add the file and line. Columns a record does not use live on in ``meta``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Union

from alignkit.data.errors import DataError, Origin
from alignkit.data.rankings import pair_indices

Message = dict[str, Any]  # {"role": ..., "content": ...}; extra keys are kept
Prompt = Union[str, list[Message]]
Response = Union[str, list[Message]]
# The roles chat templates know. A role outside these ("wizard", "Human") would be rendered
# verbatim by permissive templates and trained on silently; whether a template takes "tool" or
# "system" is checked when it renders (alignkit.data.chat).
ROLES = ("system", "user", "assistant", "tool")


def is_conversational(record: Any) -> bool:
    """True when the prompt (or ``messages`` of a raw row) is a list of role/content messages.

    Accepts a record of this module or a raw row dict, like TRL's ``is_conversational``.
    """
    if isinstance(record, dict):
        value = next((record[k] for k in ("prompt", "messages", "chosen", "completion") if k in record), None)
    else:
        value = getattr(record, "prompt", None)
    return _is_message_list(value)


def _is_message_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_messages(value: list, name: str) -> None:
    if not value:
        raise DataError("empty list of messages", field=name)
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise DataError(f"message {i} must be an object with 'role' and 'content', got {_type_name(message)}", field=name)
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise DataError(f"message {i}: '{key}' must be a string, got {_type_name(message.get(key))}", field=name)
        if message["role"] not in ROLES:
            raise DataError(f"message {i}: unknown role {message['role']!r} (expected one of {', '.join(ROLES)})", field=name)


def check_prompt(prompt: Any, name: str = "prompt") -> None:
    """A prompt is non-empty text or a non-empty list of messages with some content."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise DataError("empty", field=name)
    elif isinstance(prompt, list):
        _check_messages(prompt, name)
        if not any(m["content"].strip() for m in prompt):
            raise DataError("every message is empty", field=name)
    else:
        raise DataError(f"expected text or a list of messages, got {_type_name(prompt)}", field=name)


def check_response(response: Any, name: str, prompt: Prompt) -> None:
    """A response has the prompt's shape; a conversational one ends with a non-empty assistant turn."""
    if isinstance(prompt, str):
        if not isinstance(response, str):
            raise DataError(f"expected text (the prompt is text), got {_type_name(response)}", field=name)
        if not response.strip():
            raise DataError("empty", field=name)
        return
    if not isinstance(response, list):
        raise DataError(f"expected a list of messages (the prompt is one), got {_type_name(response)}", field=name)
    _check_messages(response, name)
    last = response[-1]
    if last["role"] != "assistant":
        raise DataError(f"last message must have role 'assistant', got '{last['role']}'", field=name)
    if not last["content"].strip():
        raise DataError("empty assistant reply", field=name)


def response_text(response: Response) -> str:
    """The text a response says, for comparisons and character counts."""
    if isinstance(response, str):
        return response
    return "\n".join(m["content"] for m in response)


def _same_response(a: Response, b: Response) -> bool:
    # Whitespace around a reply is not a difference a preference can be learned from.
    return response_text(a).strip() == response_text(b).strip()


@dataclass(frozen=True)
class SFTExample:
    """A demonstration: the loss is taken on ``completion`` only."""

    prompt: Prompt
    completion: Response
    meta: dict = field(default_factory=dict)
    origin: Origin | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        check_prompt(self.prompt)
        check_response(self.completion, "completion", self.prompt)


@dataclass(frozen=True)
class PreferencePair:
    """One prompt with a preferred (``chosen``) and a dispreferred (``rejected``) response."""

    prompt: Prompt
    chosen: Response
    rejected: Response
    meta: dict = field(default_factory=dict)
    origin: Origin | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        check_prompt(self.prompt)
        check_response(self.chosen, "chosen", self.prompt)
        check_response(self.rejected, "rejected", self.prompt)
        if _same_response(self.chosen, self.rejected):
            raise DataError("identical to 'rejected'", field="chosen")


@dataclass(frozen=True)
class Ranking:
    """K >= 2 responses to one prompt with a score each (higher is better).

    :meth:`to_pairs` gives every pair with different scores as a :class:`PreferencePair`
    (K(K-1)/2 when no scores tie). Tied pairs carry no preference and are skipped; ``n_ties``
    counts them so the caller can report how many were left out.
    """

    prompt: Prompt
    responses: list
    scores: list[float]
    meta: dict = field(default_factory=dict)
    origin: Origin | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        check_prompt(self.prompt)
        if not isinstance(self.responses, list):
            raise DataError(f"expected a list of responses, got {_type_name(self.responses)}", field="responses")
        if len(self.responses) < 2:
            raise DataError(f"a ranking needs at least 2 responses, got {len(self.responses)}", field="responses")
        for i, response in enumerate(self.responses):
            check_response(response, f"responses[{i}]", self.prompt)
        texts = [response_text(r).strip() for r in self.responses]
        for i, text in enumerate(texts):
            if text in texts[:i]:
                raise DataError(f"response {i} is identical to response {texts.index(text)}", field="responses")
        if not isinstance(self.scores, list) or len(self.scores) != len(self.responses):
            got = len(self.scores) if isinstance(self.scores, list) else _type_name(self.scores)
            raise DataError(f"expected a list of {len(self.responses)} numbers (one per response), got {got}", field="scores")
        for i, score in enumerate(self.scores):
            # bool is an int subclass; a True/False score is almost certainly a mislabelled column.
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise DataError(f"score {i} must be a finite number, got {score!r}", field="scores")

    @property
    def n_ties(self) -> int:
        return pair_indices(self.scores)[1]

    def to_pairs(self) -> list[PreferencePair]:
        """Every untied pair, higher score as ``chosen``; scores go into each pair's ``meta``."""
        winners_losers, _ = pair_indices(self.scores)
        return [
            PreferencePair(
                self.prompt,
                self.responses[winner],
                self.responses[loser],
                meta={**self.meta, "score_chosen": self.scores[winner], "score_rejected": self.scores[loser]},
                origin=self.origin,
            )
            for winner, loser in winners_losers
        ]


@dataclass(frozen=True)
class BinaryFeedback:
    """A single response with a thumbs up (``label=True``) or down, as KTO consumes."""

    prompt: Prompt
    completion: Response
    label: bool
    meta: dict = field(default_factory=dict)
    origin: Origin | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        check_prompt(self.prompt)
        check_response(self.completion, "completion", self.prompt)
        if not isinstance(self.label, bool):
            raise DataError(f"expected true or false, got {self.label!r}", field="label")


@dataclass(frozen=True)
class PromptOnly:
    """A prompt for on-policy RL, with an optional reference answer for verifiable rewards."""

    prompt: Prompt
    answer: str | None = None
    meta: dict = field(default_factory=dict)
    origin: Origin | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        check_prompt(self.prompt)
        if self.answer is not None and not isinstance(self.answer, str):
            raise DataError(f"expected text or null, got {_type_name(self.answer)}", field="answer")


RECORD_TYPES = {
    "sft": SFTExample,
    "preference": PreferencePair,
    "ranking": Ranking,
    "binary": BinaryFeedback,
    "prompt": PromptOnly,
}
"""Record class for each ``kind`` accepted by the readers."""
