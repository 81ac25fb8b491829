"""Tokenise a list of records under a length budget, reporting every row it had to cut or drop.

Truncation (TRL's "keep the end of the prompt" rule): the prompt is left-truncated to
``max_prompt_length`` (default ``max_length // 2``) so the turn the model answers survives,
then each response is right-truncated so prompt + response <= ``max_length`` and response <=
``max_completion_length`` (a cut response keeps no end-of-turn token). A row with no
room left for its response (only possible when ``max_prompt_length >= max_length``) cannot be
kept: that is a :class:`DataError` naming file, line and field, or a counted drop with
``skip_invalid=True``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignkit.data.chat import (
    EncodedBinary,
    EncodedPair,
    EncodedPrompt,
    EncodedSFT,
    completion_after_prompt,
    encode_prompt,
)
from alignkit.data.errors import DataError, Origin, write_rejects
from alignkit.data.formats import BinaryFeedback, PreferencePair, PromptOnly, Ranking, SFTExample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodeResult:
    items: list  # EncodedPair / EncodedSFT / EncodedBinary / EncodedPrompt, in input order
    n_truncated: int  # rows kept with the prompt and/or a response cut
    n_dropped: int  # rows that could not be kept (only > 0 with skip_invalid=True)
    warnings: list[str] = field(default_factory=list)  # the lines also logged, for reports
    rejects: list[DataError] = field(default_factory=list)


@dataclass
class _Budget:
    max_length: int | None
    max_prompt_length: int | None
    max_completion_length: int | None = None
    n_prompt_cut: int = 0
    n_response_cut: int = 0

    def fit(self, prompt_ids: list[int], responses: list[list[int]], names: list[str]) -> tuple[list[int], list[list[int]], bool]:
        """(prompt_ids, responses, was_cut) within the budget; DataError if a response has no room."""
        cut = False
        if self.max_prompt_length is not None and len(prompt_ids) > self.max_prompt_length:
            prompt_ids = prompt_ids[len(prompt_ids) - self.max_prompt_length :]  # keep the end
            self.n_prompt_cut += 1
            cut = True
        if not responses:
            return prompt_ids, responses, cut
        room = self.max_length - len(prompt_ids) if self.max_length is not None else None
        if room is not None and room <= 0:
            raise DataError(
                f"too long to keep: the prompt alone takes {len(prompt_ids)} tokens of max_length={self.max_length} "
                f"(max_prompt_length={self.max_prompt_length}), leaving no room for '{names[0]}'",
                field="prompt",
            )
        if self.max_completion_length is not None:
            room = self.max_completion_length if room is None else min(room, self.max_completion_length)
        if room is not None and any(len(r) > room for r in responses):
            responses = [r[:room] for r in responses]
            self.n_response_cut += 1
            cut = True
        return prompt_ids, responses, cut


def _encode_one(tokenizer, record: Any, budget: _Budget) -> tuple[Any, bool]:
    prompt_ids = encode_prompt(tokenizer, record.prompt)
    meta = dict(record.meta)
    if isinstance(record, PromptOnly):
        prompt_ids, _, cut = budget.fit(prompt_ids, [], [])
        return EncodedPrompt(prompt_ids, meta, answer=record.answer, prompt=record.prompt), cut
    if isinstance(record, PreferencePair):
        names, responses = ["chosen", "rejected"], [record.chosen, record.rejected]
    elif isinstance(record, (SFTExample, BinaryFeedback)):
        names, responses = ["completion"], [record.completion]
    else:
        raise TypeError(f"cannot encode {type(record).__name__}")
    # Each response is located after the *untruncated* prompt; truncation comes after.
    response_ids = []
    for name, response in zip(names, responses):
        try:
            response_ids.append(completion_after_prompt(tokenizer, record.prompt, prompt_ids, response))
        except DataError as exc:  # the template refused the conversation: name the response
            raise DataError(exc.reason, field=exc.field or name) from None
    prompt_ids, response_ids, cut = budget.fit(prompt_ids, response_ids, names)
    if isinstance(record, PreferencePair):
        return EncodedPair(prompt_ids, response_ids[0], response_ids[1], meta), cut
    if isinstance(record, BinaryFeedback):
        return EncodedBinary(prompt_ids, response_ids[0], record.label, meta), cut
    return EncodedSFT(prompt_ids, response_ids[0], meta), cut


def _record_as_row(record: Any) -> dict:
    """A record's fields (without its origin), as the rejects file's ``raw``."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name != "origin"}


def encode_dataset(
    tokenizer,
    records: list,
    *,
    max_length: int | None,
    max_prompt_length: int | None = None,
    max_completion_length: int | None = None,
    source_name: str = "<records>",
    skip_invalid: bool = False,
    rejects_path: str | Path | None = None,
) -> EncodeResult:
    """Tokenise ``records`` (any mix of kinds; rankings are expanded into their pairs).

    Errors name the record's file and line (from ``record.origin``) or, for records built in
    code, ``source_name`` and the 1-based position. ``rejects_path`` writes the dropped rows.
    """
    if max_prompt_length is None and max_length is not None:
        max_prompt_length = max_length // 2
    if max_length is not None and max_prompt_length is not None and max_prompt_length > max_length:
        raise ValueError(f"max_prompt_length={max_prompt_length} exceeds max_length={max_length}")
    warnings: list[str] = []
    if any(isinstance(r, Ranking) for r in records):
        records, warnings = _expand_rankings(records, source_name)
    budget = _Budget(max_length, max_prompt_length, max_completion_length)
    items, rejects, n_truncated = [], [], 0
    for position, record in enumerate(records, start=1):
        origin = record.origin or Origin(source_name, position, unit="row")
        try:
            item, cut = _encode_one(tokenizer, record, budget)
        except DataError as exc:
            error = exc.located(origin, raw=_record_as_row(record))
            if not skip_invalid:
                raise error from None
            rejects.append(error)
            continue
        items.append(item)
        n_truncated += cut
    if n_truncated:
        warnings.append(
            f"{source_name}: truncated {n_truncated} of {len(records)} rows to max_length={max_length} "
            f"(prompt cut from the left in {budget.n_prompt_cut} with max_prompt_length={max_prompt_length}; "
            f"responses cut on the right in {budget.n_response_cut}"
            + (f", max_completion_length={max_completion_length})" if max_completion_length else ")")
        )
    if rejects:
        written = write_rejects(rejects, rejects_path) if rejects_path else None
        warnings.append(
            f"{source_name}: dropped {len(rejects)} of {len(records)} rows that do not fit; first: {rejects[0].message}"
            + (f" (all in {written})" if written else "")
        )
    for line in warnings:
        log.warning("%s", line)
    return EncodeResult(items=items, n_truncated=n_truncated, n_dropped=len(rejects), warnings=warnings, rejects=rejects)


def _expand_rankings(records: list, source_name: str) -> tuple[list, list[str]]:
    expanded, n_rankings, n_pairs, n_ties = [], 0, 0, 0
    for record in records:
        if isinstance(record, Ranking):
            pairs = record.to_pairs()
            expanded.extend(pairs)
            n_rankings, n_pairs, n_ties = n_rankings + 1, n_pairs + len(pairs), n_ties + record.n_ties
        else:
            expanded.append(record)
    return expanded, [f"{source_name}: expanded {n_rankings} rankings into {n_pairs} pairs ({n_ties} tied pairs skipped)"]
