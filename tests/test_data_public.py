"""Public preference files saved locally (HH-RLHF, UltraFeedback) read as the hub serves them:
recognised from their schema or named with data_format, compressed or Parquet, from the CLI too."""

import bz2
import gzip
import json
import lzma
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from alignkit.cli import app
from alignkit.data import DataError, inspect_file, read_records
from alignkit.data.detect import resolve_format

FIXTURES = Path(__file__).parent / "fixtures"
HH = FIXTURES / "hh_rlhf.jsonl"
UF = FIXTURES / "ultrafeedback_binarized.jsonl"


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def as_served(src: Path, tmp_path: Path, shape: str) -> Path:
    """``src`` saved the ways the hub serves these sets: HH-RLHF as train.jsonl.gz, UltraFeedback as Parquet."""
    target = tmp_path / f"{src.stem}{shape}"
    data = src.read_bytes()
    if shape == ".jsonl":
        target.write_bytes(data)
    elif shape == ".jsonl.gz":
        target.write_bytes(gzip.compress(data))
    elif shape == ".jsonl.bz2":
        target.write_bytes(bz2.compress(data))
    elif shape == ".jsonl.xz":
        target.write_bytes(lzma.compress(data))
    elif shape == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows(src)), target)
    return target


@pytest.mark.parametrize("shape", [".jsonl", ".jsonl.gz", ".jsonl.bz2", ".jsonl.xz", ".parquet"])
@pytest.mark.parametrize("src, schema", [(HH, "hh-rlhf"), (UF, "ultrafeedback")])
def test_public_files_are_recognised_in_every_shape(tmp_path, shape, src, schema):
    path = as_served(src, tmp_path, shape)
    assert resolve_format(path) == schema
    records = read_records(path, "preference").records
    # The same pairs as the named adapter gives on the plain file, whatever the shape.
    assert records == read_records(src, "preference", data_format=schema).records
    assert len(records) == 6 and all(r.chosen[-1]["role"] == "assistant" for r in records)
    assert records[0].origin.source == str(path)


def test_trl_files_stay_trl():
    for name in ("pairs_standard.jsonl", "pairs_conversational.jsonl", "pairs.json"):
        assert resolve_format(FIXTURES / name) == "trl"


def test_named_format_that_does_not_fit_is_an_error_naming_the_row():
    standard = FIXTURES / "pairs_standard.jsonl"
    with pytest.raises(DataError) as caught:
        read_records(standard, "preference", data_format="ultrafeedback")
    assert str(caught.value) == f"{standard}:1: field 'chosen': expected the whole conversation (a list of messages), got str"
    with pytest.raises(DataError) as caught:
        read_records(standard, "preference", data_format="hh-rlhf")
    assert str(caught.value) == f"{standard}:1: field 'chosen': expected a transcript starting with '\\n\\nHuman:', starts with ' 4'"
    with pytest.raises(DataError, match="holds preference pairs; it cannot be read as 'binary'"):
        read_records(HH, "binary", data_format="hh-rlhf")


def test_hh_transcript_read_as_trl_hints_at_the_format(tmp_path):
    with pytest.raises(DataError, match=r"hh_rlhf\.jsonl:1: field 'chosen': .*pass --data-format hh-rlhf"):
        read_records(HH, "preference", data_format="trl")


def test_a_stray_row_of_another_schema_is_reported_not_guessed(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(HH.read_text() + json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(DataError) as caught:
        read_records(path, "preference")
    assert str(caught.value) == f"{path}:7: field 'chosen': expected a transcript starting with '\\n\\nHuman:', starts with 'a'"


def test_inspect_reports_the_schema(tmp_path):
    from rich.console import Console

    summary = inspect_file(as_served(HH, tmp_path, ".jsonl.gz"), console=Console(record=True, width=120))
    assert summary["data_format"] == "hh-rlhf" and (summary["valid"], summary["invalid"]) == (6, 0)


@pytest.mark.parametrize("fmt", ["auto", "hh-rlhf"])
def test_local_hh_rlhf_file_trains_from_the_cli(tmp_path, tiny_dir, fmt):
    data = as_served(HH, tmp_path, ".jsonl.gz")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["dpo", "--model", tiny_dir, "--data", str(data), "--data-format", fmt,
                                      "--batch-size", "2", "--max-steps", "1", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["data_format"] == fmt
    assert (out / "summary.json").exists()


def test_sft_on_a_local_ultrafeedback_parquet_trains_on_chosen(tmp_path, tiny_dir):
    data = as_served(UF, tmp_path, ".parquet")
    result = CliRunner().invoke(app, ["sft", "--model", tiny_dir, "--data", str(data), "--batch-size", "2",
                                      "--max-steps", "1", "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
