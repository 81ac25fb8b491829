"""One error type for bad data, whose message always says where the problem is.

Format: ``<source>:<line>: field '<field>': <reason>``, e.g.
``data/pairs.jsonl:17: field 'chosen': identical to 'rejected'``. Text files (JSONL, JSON) give
the 1-based line the row starts on; tables (CSV, Parquet, ``datasets.Dataset``) give the 1-based
row number, written ``<source>:row 17:`` so it is never mistaken for a line. A problem that
belongs to no single field (a line that is not JSON) leaves the field part out.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A row that cannot be used, located by source, line (or row) and field.

    Validation code raises it with only ``field`` and ``reason`` known; the reader that owns the
    row fills in the location with :meth:`located` before it reaches the user.
    """

    def __init__(
        self,
        reason: str,
        *,
        field: str | None = None,
        source: str | None = None,
        line: int | None = None,
        unit: str = "line",
        raw: Any = None,
    ):
        self.reason = reason
        self.field = field
        self.source = source
        self.line = line
        self.unit = unit  # "line" for text files, "row" for tables
        self.raw = raw  # the original line (str) or row (dict), kept for the rejects file
        super().__init__(self.message)

    def __reduce__(self):
        # Keyword-only arguments: the default exception pickling would pass the message as reason.
        return _rebuild_error, (self.reason, self.field, self.source, self.line, self.unit, self.raw)

    @property
    def message(self) -> str:
        parts = []
        if self.source is not None:
            where = self.source
            if self.line is not None:
                where += f":{self.line}" if self.unit == "line" else f":row {self.line}"
            parts.append(where)
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        parts.append(self.reason)
        return ": ".join(parts)

    def __str__(self) -> str:
        return self.message

    def located(self, origin: "Origin", raw: Any = None) -> "DataError":
        """A copy with the location filled in (a location already set is kept)."""
        return DataError(
            self.reason,
            field=self.field,
            source=self.source if self.source is not None else origin.source,
            line=self.line if self.line is not None else origin.line,
            unit=self.unit if self.source is not None else origin.unit,
            raw=self.raw if self.raw is not None else raw,
        )

    def to_reject(self) -> dict:
        """One line of a rejects file: where, why, and the original input untouched."""
        return {
            "source": self.source,
            self.unit: self.line,
            "field": self.field,
            "reason": self.reason,
            "error": self.message,
            "raw": self.raw,
        }


def _rebuild_error(reason, field, source, line, unit, raw) -> DataError:
    return DataError(reason, field=field, source=source, line=line, unit=unit, raw=raw)


@dataclasses.dataclass(frozen=True)
class Origin:
    """Where a record came from, kept on the record so later steps (tokenisation) can say so."""

    source: str
    line: int
    unit: str = "line"  # "line" for text files, "row" for tables

    def error(self, reason: str, *, field: str | None = None, raw: Any = None) -> DataError:
        return DataError(reason, field=field, source=self.source, line=self.line, unit=self.unit, raw=raw)


def write_rejects(errors: list[DataError], path: str | Path) -> Path:
    """Write one JSON object per rejected row to ``path`` (overwritten).

    ``ensure_ascii`` keeps the file valid UTF-8 even when a raw line held bytes that were not:
    those were decoded with ``surrogateescape`` and come out as ``\\udcXX`` escapes, from which
    ``raw.encode("utf-8", "surrogateescape")`` gives back the exact original bytes.
    """
    path = Path(path)
    with path.open("w", encoding="utf-8") as handle:
        for error in errors:
            handle.write(json.dumps(error.to_reject(), ensure_ascii=True, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    # Rows from Parquet or a Dataset can hold values json does not know (dates, bytes, numpy).
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="surrogateescape")
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
