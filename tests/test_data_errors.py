"""Every kind of bad row is an error that names file, line (or row) and field; or a counted reject."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignkit.data import DataError, PreferencePair, encode_dataset, read_records

GOOD = {"prompt": "2 + 2 =", "chosen": " 4", "rejected": " 5"}


def write_lines(path, lines):
    """Write raw lines (str or bytes) exactly, one per line."""
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return path


def row(**changes):
    return json.dumps({**GOOD, **changes})


def error_for(path, kind="preference"):
    with pytest.raises(DataError) as caught:
        read_records(path, kind)
    return caught.value


def test_bad_json_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "pairs.jsonl", [row(), '{"prompt": "x", "chosen": ', row()])
    error = error_for(path)
    # No field to name: the line is not an object at all.
    assert str(error).startswith(f"{path}:2: invalid JSON")
    assert (error.line, error.field) == (2, None)


def test_missing_field(tmp_path):
    path = write_lines(tmp_path / "pairs.jsonl", [row(), row(), json.dumps({"prompt": "p", "chosen": "c"})])
    assert str(error_for(path)) == f"{path}:3: field 'rejected': missing"


def test_empty_field(tmp_path):
    path = write_lines(tmp_path / "pairs.jsonl", [row(chosen="   ")])
    assert str(error_for(path)) == f"{path}:1: field 'chosen': empty"


def test_empty_assistant_reply(tmp_path):
    conversation = {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": ""}],
                    "rejected": [{"role": "assistant", "content": "Hello"}]}
    path = write_lines(tmp_path / "pairs.jsonl", [json.dumps(conversation)])
    assert str(error_for(path)) == f"{path}:1: field 'chosen': empty assistant reply"


def test_wrong_type(tmp_path):
    path = write_lines(tmp_path / "pairs.jsonl", [row(), row(prompt=42)])
    assert str(error_for(path)) == f"{path}:2: field 'prompt': expected text or a list of messages, got int"


def test_wrong_label_type(tmp_path):
    path = write_lines(tmp_path / "kto.jsonl", [json.dumps({"prompt": "p", "completion": "c", "label": "maybe"})])
    assert str(error_for(path, "binary")) == f"{path}:1: field 'label': expected true or false, got 'maybe'"


def test_chosen_identical_to_rejected(tmp_path):
    path = write_lines(tmp_path / "pairs.jsonl", [row()] * 16 + [row(chosen=" same", rejected="same ")])
    assert str(error_for(path)) == f"{path}:17: field 'chosen': identical to 'rejected'"


def test_non_utf8_bytes(tmp_path):
    bad = b'{"prompt": "p", "chosen": "ok", "rejected": "caf\xe9 \xff"}'
    path = write_lines(tmp_path / "pairs.jsonl", [row(), bad])
    assert str(error_for(path)) == f"{path}:2: field 'rejected': not valid UTF-8 (byte 0xe9)"


def test_non_utf8_bytes_in_csv(tmp_path):
    path = tmp_path / "sft.csv"
    path.write_bytes(b"prompt,completion\nHi,Hello\nHi,Hel\xfflo\n")
    assert str(error_for(path, "sft")) == f"{path}:row 2: field 'completion': not valid UTF-8 (byte 0xff)"


def test_csv_and_parquet_give_row_numbers(tmp_path):
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("prompt,chosen,rejected\np,a,b\np,,b\n")
    assert str(error_for(csv_path)) == f"{csv_path}:row 2: field 'chosen': empty"
    parquet = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([GOOD, GOOD, {**GOOD, "rejected": GOOD["chosen"]}]), parquet)
    assert str(error_for(parquet)) == f"{parquet}:row 3: field 'chosen': identical to 'rejected'"


def test_json_array_gives_the_line_the_row_starts_on(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([GOOD, {**GOOD, "chosen": ""}], indent=2))
    assert str(error_for(path)) == f"{path}:7: field 'chosen': empty"


def test_dataset_rows_are_named(tmp_path):
    import datasets

    dataset = datasets.Dataset.from_list([GOOD, {**GOOD, "prompt": ""}])
    with pytest.raises(DataError, match=r"^my-data:row 2: field 'prompt': empty$"):
        read_records(dataset, "preference", source_name="my-data")


def test_row_too_long_to_keep_is_reported_by_tokenisation(tmp_path, tokenizer):
    long_prompt = "word " * 80
    path = write_lines(tmp_path / "pairs.jsonl", [row(), row(prompt=long_prompt)])
    records = read_records(path, "preference").records
    with pytest.raises(DataError) as caught:
        encode_dataset(tokenizer, records, max_length=32, max_prompt_length=32)
    message = str(caught.value)
    assert message.startswith(f"{path}:2: field 'prompt': too long to keep")
    assert "max_length=32" in message
    dropped = encode_dataset(tokenizer, records, max_length=32, max_prompt_length=32, skip_invalid=True,
                             rejects_path=tmp_path / "too_long.jsonl")
    assert (len(dropped.items), dropped.n_dropped) == (1, 1)
    assert "dropped 1 of 2 rows" in dropped.warnings[-1]
    reject = json.loads((tmp_path / "too_long.jsonl").read_text())
    assert reject["line"] == 2 and reject["field"] == "prompt" and reject["raw"]["prompt"] == long_prompt


def test_encode_names_records_built_in_code(tokenizer):
    records = [PreferencePair("p " * 50, " a", " b")]
    with pytest.raises(DataError, match=r"^my-records:row 1: field 'prompt'"):
        encode_dataset(tokenizer, records, max_length=8, max_prompt_length=8, source_name="my-records")


def test_skip_invalid_counts_and_writes_every_reject(tmp_path):
    bad_json = '{"prompt": "x",'
    identical = row(chosen="same", rejected="same")
    missing = json.dumps({"prompt": "p", "chosen": "c"})
    not_utf8 = b'{"prompt": "p", "chosen": "\xff", "rejected": "r"}'
    path = write_lines(tmp_path / "pairs.jsonl", [row(), bad_json, "", identical, missing, not_utf8, row(id=6)])
    result = read_records(path, "preference", skip_invalid=True)
    assert len(result.records) == 2 and result.n_invalid == 4
    assert result.records[1].meta == {"id": 6} and result.records[1].origin.line == 7
    assert result.rejects_path == tmp_path / "pairs.jsonl.rejects.jsonl"
    rejects = [json.loads(line) for line in result.rejects_path.read_text().splitlines()]
    assert [(r["line"], r["field"]) for r in rejects] == [(2, None), (4, "chosen"), (5, "rejected"), (6, "chosen")]
    assert [r["raw"] for r in rejects[:3]] == [bad_json, identical, missing]
    assert rejects[1]["reason"] == "identical to 'rejected'"
    assert rejects[1]["error"] == f"{path}:4: field 'chosen': identical to 'rejected'"
    # The raw line of undecodable bytes comes back byte for byte.
    assert rejects[3]["raw"].encode("utf-8", "surrogateescape") == not_utf8

    custom = tmp_path / "elsewhere.jsonl"
    again = read_records(path, "preference", skip_invalid=True, rejects_path=custom)
    assert again.rejects_path == custom and len(custom.read_text().splitlines()) == 4


def test_clean_file_writes_no_rejects(tmp_path):
    path = write_lines(tmp_path / "pairs.jsonl", [row()])
    result = read_records(path, "preference", skip_invalid=True)
    assert result.n_invalid == 0 and result.rejects_path is None
    assert not (tmp_path / "pairs.jsonl.rejects.jsonl").exists()


def test_single_json_object_is_not_a_dataset(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(GOOD, indent=2))
    with pytest.raises(DataError, match=r":1: expected a JSON array of objects"):
        read_records(path, "preference")


def test_errors_survive_pickling():
    # datasets.map(num_proc>1) and multiprocessing pass exceptions between processes.
    import pickle

    error = DataError("empty", field="chosen", source="a.jsonl", line=3, raw="{}")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == "a.jsonl:3: field 'chosen': empty" and again.raw == "{}"


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_records(tmp_path / "absent.jsonl", "sft")
