"""Look at a data file before training on it: a few rows side by side, then a summary.

The summary is what tends to go wrong silently: invalid rows, very long rows (percentiles in
tokens when a tokenizer is given), and length bias — if chosen responses are usually longer
than rejected ones, a preference model can score well by preferring length alone (Singhal et
al. 2023, "A Long Way to Go: Investigating Length Correlations in RLHF").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from alignkit.data.chat import completion_after_prompt, encode_prompt
from alignkit.data.detect import converter, resolve_format
from alignkit.data.errors import DataError
from alignkit.data.formats import BinaryFeedback, PreferencePair, PromptOnly, Ranking, response_text
from alignkit.data.sources import iter_records

PERCENTILES = (50, 90, 99)
SHOWN_CHARS = 600  # per field in the row view; the summary always measures the whole text
SHOWN_ERRORS = 5


def record_fields(record: Any) -> dict[str, list]:
    """Field name -> the values it holds (one each, except a ranking's responses)."""
    if isinstance(record, PreferencePair):
        return {"prompt": [record.prompt], "chosen": [record.chosen], "rejected": [record.rejected]}
    if isinstance(record, Ranking):
        return {"prompt": [record.prompt], "responses": list(record.responses)}
    if isinstance(record, PromptOnly):
        return {"prompt": [record.prompt], "answer": [record.answer] if record.answer else []}
    return {"prompt": [record.prompt], "completion": [record.completion]}


def field_lengths(record: Any, tokenizer=None) -> dict[str, list[int]]:
    """Length of every value of a record: tokens as training will see them, or characters."""
    fields = record_fields(record)
    if tokenizer is None:
        return {name: [len(response_text(v)) for v in values] for name, values in fields.items()}
    prompt_ids = encode_prompt(tokenizer, record.prompt)
    lengths = {"prompt": [len(prompt_ids)]}
    for name, values in fields.items():
        if name == "prompt":
            continue
        if name == "answer":  # a reference answer is never templated
            lengths[name] = [len(tokenizer(v, add_special_tokens=False)["input_ids"]) for v in values]
        else:
            lengths[name] = [len(completion_after_prompt(tokenizer, record.prompt, prompt_ids, v)) for v in values]
    return lengths


def percentile(values: list[int], p: float) -> int:
    """Nearest-rank percentile (an actual observed length, never an interpolation)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _show(value: Any) -> Text:
    """A prompt or response as plain text (``Text``, so brackets in data are never rich markup)."""
    if isinstance(value, list) and len(value) == 1 and value[0]["role"] == "assistant":
        text = value[0]["content"]  # a lone assistant reply: the role adds nothing
    elif isinstance(value, list):
        text = "\n".join(f"{m['role']}: {m['content']}" for m in value)
    else:
        text = str(value)
    if len(text) > SHOWN_CHARS:
        text = text[:SHOWN_CHARS] + f" … (+{len(text) - SHOWN_CHARS} chars)"
    return Text(text)


def _row_view(index: int, record: Any, lengths: dict[str, list[int]], unit: str) -> Panel:
    fields = record_fields(record)
    prompt = Panel(_show(record.prompt), title=f"prompt · {lengths['prompt'][0]} {unit}", title_align="left")
    columns = Table(expand=True, show_lines=False)
    cells = []
    for name, values in fields.items():
        if name == "prompt":
            continue
        for i, value in enumerate(values):
            header = f"{name} · {lengths[name][i]} {unit}"
            if isinstance(record, Ranking):
                header = f"response {i} (score {record.scores[i]}) · {lengths[name][i]} {unit}"
            elif isinstance(record, BinaryFeedback):
                header += " · " + ("desirable" if record.label else "undesirable")
            columns.add_column(header, ratio=1)
            cells.append(_show(value))
    body = [prompt]
    if cells:
        columns.add_row(*cells)
        body.append(columns)
    where = f"{record.origin.source}:{record.origin.line}" if record.origin else ""
    meta = ", ".join(f"{k}={str(v)[:40]}" for k, v in list(record.meta.items())[:4])
    return Panel(Group(*body), title=f"row {index} {where}", subtitle=meta or None, title_align="left")


def inspect_file(path: str | Path | Any, kind: str = "preference", n: int = 5, tokenizer=None, console: Console | None = None,
                 data_format: str = "auto") -> dict:
    """Print the first ``n`` rows side by side and a summary; return the summary as a dict.

    Invalid rows are counted and their first few errors listed; the file is never modified and
    no rejects file is written. ``data_format`` as in :func:`alignkit.data.read_records`.
    """
    console = console or Console()
    unit = "tokens" if tokenizer is not None else "chars"
    if kind == "preference":
        data_format = resolve_format(path, data_format)
    else:
        data_format = "trl" if data_format == "auto" else data_format
    records, errors, lengths = [], [], []
    for item in iter_records(path, converter(kind, data_format, str(path))):
        if isinstance(item, DataError):
            errors.append(item)
            continue
        try:
            measured = field_lengths(item, tokenizer)
        except DataError as exc:  # a prompt the chat template cannot render as a prefix
            errors.append(exc.located(item.origin) if item.origin else exc)
            continue
        records.append(item)
        lengths.append(measured)

    for index, (record, measured) in enumerate(zip(records[:n], lengths[:n]), start=1):
        console.print(_row_view(index, record, measured, unit))

    summary = summarise(lengths, kind=kind, unit=unit)
    summary = {"source": str(path), "data_format": data_format, "rows": len(records) + len(errors), "valid": len(records),
               "invalid": len(errors), **summary}
    summary["invalid_examples"] = [e.message for e in errors[:SHOWN_ERRORS]]
    console.print(_summary_view(summary))
    return summary


def summarise(lengths: list[dict[str, list[int]]], *, kind: str, unit: str) -> dict:
    """Length percentiles per field and, for pairs, how often chosen is the longer response."""
    pooled: dict[str, list[int]] = {}
    for measured in lengths:
        for name, values in measured.items():
            pooled.setdefault(name, []).extend(values)
    table = {
        name: {**{f"p{p}": percentile(values, p) for p in PERCENTILES}, "max": max(values)}
        for name, values in pooled.items()
        if values
    }
    summary: dict[str, Any] = {"kind": kind, "unit": unit, "lengths": table}
    if kind == "preference":
        longer = sum(m["chosen"][0] > m["rejected"][0] for m in lengths)
        summary["chosen_longer_fraction"] = longer / len(lengths) if lengths else None
    return summary


def _summary_view(summary: dict) -> Group:
    title = Text(f"summary: {summary['source']}", style="bold")
    counts = Table(show_header=False)
    counts.add_row("format", summary["data_format"])
    counts.add_row("rows", str(summary["rows"]))
    counts.add_row("valid", str(summary["valid"]))
    counts.add_row("invalid", str(summary["invalid"]))
    fraction = summary.get("chosen_longer_fraction")
    if fraction is not None:
        counts.add_row("chosen longer than rejected", f"{fraction:.0%} (length-bias signal; ~50% is neutral)")
    lengths = Table(title=f"lengths ({summary['unit']})")
    lengths.add_column("field")
    for column in [f"p{p}" for p in PERCENTILES] + ["max"]:
        lengths.add_column(column, justify="right")
    for name, stats in summary["lengths"].items():
        lengths.add_row(name, *(str(v) for v in stats.values()))
    parts = [title, counts, lengths]
    if summary["invalid_examples"]:
        parts.append(Text("invalid rows (first few):\n" + "\n".join(summary["invalid_examples"]), style="red"))
    return Group(*parts)
