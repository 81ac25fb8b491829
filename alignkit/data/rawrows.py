"""Raw rows, each with its location, from JSONL, JSON, CSV, Parquet or a ``datasets.Dataset``.

This layer only parses. A row that cannot be parsed (bad JSON, bytes that are not UTF-8, a CSV
line with too many cells) comes out as a :class:`RawRow` carrying a :class:`DataError`, so the
caller decides whether to stop or skip it. A file that cannot be read at all (missing, a
directory, empty, UTF-16, a corrupt archive, a JSON array broken in the middle) raises instead:
there is no row to skip.

Compressed files (``.gz``, ``.bz2``, ``.xz``: the hub serves HH-RLHF as ``train.jsonl.gz``) are
read directly; the format is the suffix before the compression one.

Text is decoded with ``surrogateescape``, so a bad byte never aborts the read: it survives as a
lone surrogate, is reported against the field it sits in, and is written back byte-exact into
the rejects file.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from alignkit.data.errors import DataError, Origin

# surrogateescape maps an undecodable byte b (>= 0x80) to the lone surrogate U+DC00 + b.
UNDECODABLE = re.compile("[\udc80-\udcff]")
SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
# What a damaged archive or an unreadable file raises while being read.
READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


@dataclass(frozen=True)
class RawRow:
    origin: Origin
    raw: Any  # the original line (text files) or row dict (tables), for the rejects file
    value: dict | None  # parsed row, None when ``error`` is set
    error: DataError | None = None


def iter_raw_rows(source: Any, source_name: str | None = None) -> Iterator[RawRow]:
    """Rows of a file path (format from its suffix) or of an iterable of dicts (a Dataset)."""
    if isinstance(source, (str, Path)):
        yield from _file_rows(Path(source), source_name or str(source))
    elif isinstance(source, dict):  # a DatasetDict, or one row passed by mistake
        raise DataError(f"expected a file, a Dataset or a list of rows, got a mapping with keys {list(source)[:5]} "
                        "(for a DatasetDict pick a split: dataset['train'])", source=source_name or type(source).__name__)
    else:
        yield from _iterable_rows(source, source_name or _dataset_name(source))


def file_format(path: Path) -> tuple[str | None, str | None]:
    """(format, compression suffix) from a name like ``train.jsonl.gz``; format None if unknown."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in COMPRESSIONS else None
    return (SUFFIX_FORMATS.get(suffixes[-1]) if suffixes else None), compression


def _file_rows(path: Path, name: str) -> Iterator[RawRow]:
    fmt, compression = file_format(path)
    if fmt is None:
        known = ", ".join([*SUFFIX_FORMATS, *(f".jsonl{c}" for c in COMPRESSIONS)])
        raise DataError(f"unsupported file type '{''.join(path.suffixes) or path.name}' (use one of {known})", source=name)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir())[:4]
        raise DataError(f"is a directory, not a file (holding {', '.join(inside) or 'nothing'}): pass one file", source=name)
    if not path.is_file():
        raise DataError("no such file", source=name)
    readers = {"jsonl": _jsonl_rows, "json": _json_rows, "csv": _csv_rows, "tsv": _tsv_rows, "parquet": _parquet_rows}
    empty, header_only = True, False
    try:
        with (COMPRESSIONS[compression](path, "rb") if compression else path.open("rb")) as handle:
            if handle.peek(2)[:2] in UTF16_BOMS:
                raise DataError("encoded as UTF-16 (byte-order mark); save it as UTF-8", source=name, line=1)
            for row in readers[fmt](handle, name):
                empty = False
                # Arrow strings are already decoded; text formats may hold escaped undecodable bytes.
                yield row if fmt == "parquet" else _check_decoding(row)
            header_only = fmt in ("csv", "tsv") and handle.tell() > 0
    except READ_ERRORS as exc:
        what = f"not a readable {compression} file" if compression else "cannot read"
        raise DataError(f"{what}: {exc}", source=name) from None
    if empty:
        raise DataError("empty file: no rows" + (" after the header" if header_only else ""), source=name)


def _dataset_name(dataset: Any) -> str:
    info = getattr(dataset, "info", None)
    return getattr(info, "dataset_name", None) or f"<{type(dataset).__name__}>"


def _object_row(origin: Origin, raw: Any, value: Any) -> RawRow:
    if not isinstance(value, dict):
        kind = "array" if isinstance(value, list) else type(value).__name__
        return RawRow(origin, raw, None, origin.error(f"expected a JSON object, got {kind}", raw=raw))
    return RawRow(origin, raw, value)


def _jsonl_rows(handle: BinaryIO, name: str) -> Iterator[RawRow]:
    # Streamed line by line: a large file is never held whole.
    for line_number, line_bytes in enumerate(handle, start=1):
        text = line_bytes.decode("utf-8", errors="surrogateescape").rstrip("\r\n")
        if line_number == 1:
            text = text.removeprefix("\ufeff")  # byte-order mark some editors write
        if not text.strip():
            continue  # blank lines are layout, not rows
        origin = Origin(name, line_number)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield RawRow(origin, text, None, origin.error(f"invalid JSON: {exc.msg} (column {exc.colno})", raw=text))
            continue
        yield _object_row(origin, text, value)


def _json_rows(handle: BinaryIO, name: str) -> Iterator[RawRow]:
    """A JSON array of objects; each row is located at the line its object starts on."""
    data = handle.read()
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    start = len(text) - len(text.lstrip())
    if not text.startswith("[", start):
        if text.startswith("{", start) and "\n" in text.strip() and _is_one_object(text):
            raise DataError("expected a JSON array of objects (or one object per line), got a single object", source=name, line=1)
        # Many ".json" files are really JSON Lines (datasets' "json" builder reads both).
        yield from _jsonl_rows(io.BytesIO(data), name)
        return
    decoder = json.JSONDecoder()
    position, line, counted_to = start + 1, 1, 0
    while True:
        position = _skip_space(text, position)
        if text.startswith("]", position):
            return
        # Count newlines incrementally: recounting from 0 for every row is quadratic.
        line += text.count("\n", counted_to, position)
        counted_to = position
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            # Inside an array one broken object hides where the next begins: nothing to skip to.
            raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", source=name, line=exc.lineno) from None
        raw = text[position:end]
        yield _object_row(Origin(name, line), raw, value)
        position = _skip_space(text, end)
        if text.startswith(",", position):
            position += 1
        elif not text.startswith("]", position):
            line_here = text.count("\n", 0, position) + 1
            raise DataError("invalid JSON: expected ',' or ']' after an array item", source=name, line=line_here)


def _is_one_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _csv_rows(handle: BinaryIO, name: str, delimiter: str = ",") -> Iterator[RawRow]:
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.DictReader(text, delimiter=delimiter)
    try:
        yield from _csv_dict_rows(reader, name)
    except csv.Error as exc:  # e.g. a NUL byte, or a cell over the csv module's size limit
        raise DataError(f"unreadable CSV: {exc}", source=name, line=reader.line_num, unit="row") from None
    finally:
        text.detach()  # the caller closes the file


def _csv_dict_rows(reader: csv.DictReader, name: str) -> Iterator[RawRow]:
    for row_number, row in enumerate(reader, start=1):
        origin = Origin(name, row_number, unit="row")
        if None in row:  # DictReader files surplus cells under the key None
            error = origin.error(f"{len(reader.fieldnames) + len(row[None])} cells but the header has {len(reader.fieldnames)}", raw=row)
            yield RawRow(origin, row, None, error)
            continue
        # A short line leaves trailing columns as None: treat them as absent, not as text.
        value = {key: _maybe_messages(cell) for key, cell in row.items() if cell is not None}
        yield RawRow(origin, row, value)


def _tsv_rows(handle: BinaryIO, name: str) -> Iterator[RawRow]:
    return _csv_rows(handle, name, delimiter="\t")


def _maybe_messages(cell: str) -> Any:
    """A CSV cell holding a JSON list of role/content messages becomes that list.

    Only message lists are converted: a text answer that merely starts with '[' stays text.
    """
    if not cell.startswith("[{"):
        return cell
    try:
        value = json.loads(cell)
    except json.JSONDecodeError:
        return cell
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        return value
    return cell


def _parquet_rows(handle: BinaryIO, name: str) -> Iterator[RawRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not handle.seekable():
        handle = io.BytesIO(handle.read())
    row_number = 0
    try:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=1024):
            for value in batch.to_pylist():
                row_number += 1
                yield RawRow(Origin(name, row_number, unit="row"), value, value)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"not a readable Parquet file: {exc}", source=name, line=row_number + 1, unit="row") from None


def _iterable_rows(rows: Iterable, name: str) -> Iterator[RawRow]:
    for row_number, value in enumerate(rows, start=1):
        origin = Origin(name, row_number, unit="row")
        yield _object_row(origin, value, value)


def _check_decoding(row: RawRow) -> RawRow:
    """Turn a field holding undecodable bytes (lone surrogates) into an error naming it."""
    if row.value is None:
        return row
    for key, value in row.value.items():
        bad = _first_bad_byte(value)
        if bad is not None:
            reason = f"not valid UTF-8 (byte 0x{bad:02x})"
            return RawRow(row.origin, row.raw, None, row.origin.error(reason, field=str(key), raw=row.raw))
    return row


def _first_bad_byte(value: Any) -> int | None:
    if isinstance(value, str):
        match = UNDECODABLE.search(value)
        return None if match is None else ord(match.group()) - 0xDC00
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            bad = _first_bad_byte(item)
            if bad is not None:
                return bad
    return None
