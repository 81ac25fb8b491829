"""The reward-function protocol — TRL's, so functions written for TRL's GRPOTrainer carry over:

    fn(prompts, completions, completion_ids, **columns) -> list[float | None]

called with keyword arguments. ``prompts[i]`` and ``completions[i]`` are strings (TRL's standard
format) or message lists (conversational: ``completions[i] == [{"role": "assistant", "content":
...}]``); ``completion_ids[i]`` are the policy's token ids (may be None where no tokenizer is at
hand, e.g. in a judge); ``columns`` are the dataset's other columns, one value per row, under
their own names. The result has one entry per completion; None means "not applicable to this
row" (a math reward on a code prompt), which a combination skips instead of counting as 0.
Options are keyword-only parameters bound with ``functools.partial``.
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, Protocol, Sequence


class RewardFunction(Protocol):
    def __call__(self, prompts: list, completions: list, completion_ids: list | None = None, **columns: Any) -> list[float | None]:
        ...


def completion_text(completion) -> str:
    """The text of one completion: a string as is; a message list (or one message): the contents
    of its messages joined by newlines (text parts only, for multimodal content lists)."""
    if isinstance(completion, str):
        return completion
    messages = [completion] if isinstance(completion, dict) else completion
    return "\n".join(_content_text(message.get("content")) for message in messages)


def _content_text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def prompt_messages(prompt) -> list[dict]:
    """A prompt as chat messages: a string becomes the user's turn; a message list is kept."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return list(prompt)


def completion_messages(completion) -> list[dict]:
    """A completion as chat messages: a string becomes the assistant's turn."""
    if isinstance(completion, str):
        return [{"role": "assistant", "content": completion}]
    return [completion] if isinstance(completion, dict) else list(completion)


def reward_name(fn) -> str:
    """How a function is logged: its ``name`` attribute or ``__name__`` (through partials)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "name", None) or getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__name__


def call_reward(fn, prompts, completions, completion_ids=None, **columns) -> list[float | None]:
    """Call ``fn`` the way TRL does (keywords) and check what it returned: one value per
    completion (no broadcasting of a scalar or a shorter list), each a real number or None.
    Tensors and arrays are accepted through their ``tolist()``; NaN and inf are returned as they
    are — deciding about them is the combiner's job (``RewardSet``)."""
    values = fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
    name = reward_name(fn)
    if hasattr(values, "tolist"):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"reward function {name!r} returned {type(values).__name__}, not a list with one value per completion")
    if len(values) != len(completions):
        raise ValueError(f"reward function {name!r} returned {len(values)} values for {len(completions)} completions")
    checked = []
    for i, value in enumerate(values):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
            raise TypeError(f"reward function {name!r} returned {value!r} for row {i}: expected a number or None")
        checked.append(None if value is None else float(value))
    return checked


def column(columns: dict, name: str, n: int, *, reward: str) -> list:
    """The dataset column ``name`` from a reward's keyword arguments, with a clear error when the
    dataset lacks it or its length is not one value per completion."""
    if name not in columns:
        known = ", ".join(sorted(columns)) or "none"
        raise KeyError(f"reward {reward!r} reads the dataset column {name!r}, which is missing (columns given: {known})")
    values = columns[name]
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return list(values)
