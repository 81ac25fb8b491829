"""Which schema a preference file is in: TRL's columns, HH-RLHF transcripts or UltraFeedback.

Public preference files do not share one shape. A file downloaded from the hub and saved
locally should train as it is, so the schema is recognised from the first row (``auto``) or
named (``--data-format``); a whole file is read in one schema, so a stray row of another shape is
reported, not silently read another way.

- ``trl``: ``prompt``/``chosen``/``rejected`` as text or message lists, or ``chosen``/``rejected``
  conversations that share their first turns (TRL's standard and conversational shapes).
- ``hh-rlhf``: ``chosen``/``rejected`` transcripts ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``.
- ``ultrafeedback``: ``prompt`` as text and ``chosen``/``rejected`` as whole conversations that
  repeat it (``HuggingFaceH4/ultrafeedback_binarized`` and files derived from it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignkit.data.adapters import hh_record, ultrafeedback_record
from alignkit.data.columns import row_to_record
from alignkit.data.errors import DataError
from alignkit.data.formats import _is_message_list
from alignkit.data.rawrows import iter_raw_rows
from alignkit.data.sources import RowConverter

DATA_FORMATS = ("auto", "trl", "hh-rlhf", "ultrafeedback")
PREFERENCE_CONVERTERS: dict[str, RowConverter] = {
    "trl": lambda value, origin: row_to_record(value, "preference", origin),
    "hh-rlhf": hh_record,
    "ultrafeedback": ultrafeedback_record,
}


def row_format(row: dict) -> str:
    """The schema one parsed row is in (``trl`` when it is neither public schema)."""
    chosen = row.get("chosen")
    if "prompt" not in row and isinstance(chosen, str) and chosen.startswith("\n\nHuman:"):
        return "hh-rlhf"
    if isinstance(row.get("prompt"), str) and _is_message_list(chosen):
        return "ultrafeedback"
    return "trl"


def first_row(source: Any, source_name: str | None = None) -> dict | None:
    """The first row of ``source`` that parses, or None (a bad row is reported by the real read)."""
    if not isinstance(source, (str, Path, Sequence)) and not hasattr(source, "column_names"):
        return None  # a one-shot iterable: peeking would consume it
    try:
        for raw in iter_raw_rows(source, source_name):
            if raw.value is not None:
                return raw.value
    except DataError:
        return None  # unreadable or empty: the real read says so with the full story
    return None


def resolve_format(source: Any, data_format: str = "auto", source_name: str | None = None) -> str:
    """``data_format`` itself, or for ``auto`` the schema of the first row."""
    if data_format not in DATA_FORMATS:
        raise ValueError(f"unknown data format {data_format!r}; expected one of {', '.join(DATA_FORMATS)}")
    if data_format != "auto":
        return data_format
    row = first_row(source, source_name)
    return row_format(row) if row is not None else "trl"


def converter(kind: str, data_format: str, source_name: str) -> RowConverter:
    """The row -> record function for ``kind`` in a resolved ``data_format``."""
    if kind == "preference":
        return PREFERENCE_CONVERTERS[data_format]
    if data_format != "trl":
        raise DataError(f"a {data_format} file holds preference pairs; it cannot be read as {kind!r} records", source=source_name)
    return lambda value, origin: row_to_record(value, kind, origin)
