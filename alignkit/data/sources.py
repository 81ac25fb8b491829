"""Read typed records from files or Datasets, stopping at bad rows or skipping them on record.

``read_records(path, "preference")`` raises :class:`DataError` at the first bad row, naming
file, line and field. With ``skip_invalid=True`` bad rows are skipped, counted, and written with
their reason and original text to a rejects JSONL file: nothing is dropped silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from alignkit.data.columns import KINDS
from alignkit.data.errors import DataError, Origin, write_rejects
from alignkit.data.rawrows import iter_raw_rows

log = logging.getLogger(__name__)

RowConverter = Callable[[dict, Origin], Any]  # parsed row -> record, or raises DataError


@dataclass(frozen=True)
class ReadResult:
    records: list
    n_invalid: int  # rows skipped (only ever > 0 with skip_invalid=True)
    rejects_path: Path | None  # where the skipped rows were written; None when none were
    rejects: list[DataError] = field(default_factory=list)  # the skipped rows' errors, in order


def iter_records(source: Any, convert: RowConverter, *, source_name: str | None = None) -> Iterator[Any]:
    """Yield a record, or the located :class:`DataError` of a bad row, for each row of ``source``.

    Errors that make the whole source unreadable (a missing file) are raised, not yielded.
    """
    for row in iter_raw_rows(source, source_name):
        if row.error is not None:
            yield row.error
            continue
        try:
            yield convert(row.value, row.origin)
        except DataError as exc:
            yield exc.located(row.origin, raw=row.raw)


def collect_records(
    source: Any,
    convert: RowConverter,
    *,
    skip_invalid: bool = False,
    rejects_path: str | Path | None = None,
    source_name: str | None = None,
) -> ReadResult:
    """Read all of ``source`` through ``convert``; the engine behind every reader and adapter."""
    records, rejects = [], []
    for item in iter_records(source, convert, source_name=source_name):
        if isinstance(item, DataError):
            if not skip_invalid:
                raise item
            rejects.append(item)
        else:
            records.append(item)
    written = None
    if rejects:
        target = rejects_path or default_rejects_path(source)
        if target is not None:
            written = write_rejects(rejects, target)
        name = rejects[0].source
        log.warning(
            "%s: skipped %d invalid rows of %d; %s", name, len(rejects), len(records) + len(rejects),
            f"details in {written}" if written else "pass rejects_path= to write them to a file",
        )
    return ReadResult(records=records, n_invalid=len(rejects), rejects_path=written, rejects=rejects)


def default_rejects_path(source: Any) -> Path | None:
    """``<input>.rejects.jsonl`` beside a file; None for an in-memory Dataset (nowhere obvious)."""
    if isinstance(source, (str, Path)):
        return Path(f"{source}.rejects.jsonl")
    return None


def read_records(
    path_or_dataset: Any,
    kind: str,
    *,
    data_format: str = "auto",
    skip_invalid: bool = False,
    rejects_path: str | Path | None = None,
    source_name: str | None = None,
) -> ReadResult:
    """Read records of ``kind`` ("sft", "preference", "ranking", "binary", "prompt").

    ``path_or_dataset``: a ``.jsonl``/``.json``/``.csv``/``.tsv``/``.parquet`` path (optionally
    ``.gz``/``.bz2``/``.xz`` compressed), a ``datasets.Dataset``, or any iterable of row dicts.
    ``data_format`` ("auto", "trl", "hh-rlhf", "ultrafeedback"; see :mod:`alignkit.data.detect`)
    says which schema preference rows are in; ``auto`` recognises it from the first row.
    ``source_name`` overrides the name used in error messages (useful for a Dataset). See
    :mod:`alignkit.data.columns` for column names.
    """
    from alignkit.data.detect import converter, resolve_format  # detect builds on this module

    if kind not in KINDS:  # checked up front so an empty file still catches a typo
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "preference":
        data_format = resolve_format(path_or_dataset, data_format, source_name)
        if data_format != "trl":
            log.info("%s: read as %s", source_name or path_or_dataset, data_format)
    else:
        data_format = "trl" if data_format == "auto" else data_format
    return collect_records(
        path_or_dataset,
        converter(kind, data_format, source_name or str(path_or_dataset)),
        skip_invalid=skip_invalid,
        rejects_path=rejects_path,
        source_name=source_name,
    )
