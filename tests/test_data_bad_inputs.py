"""Whole-file problems and wrong roles: a DataError naming file (line, field), and from the CLI a
non-zero exit with that message and no traceback, from training commands and `data inspect`."""

import gzip
import json

import pytest
from click.testing import CliRunner

from alignkit.cli import app
from alignkit.data import DataError, PreferencePair, encode_dataset, read_records

GOOD = {"prompt": "2 + 2 =", "chosen": " 4", "rejected": " 5"}
USER = {"role": "user", "content": "Hi"}


def bad_inputs(tmp_path):
    """name -> (path, the message the error must contain)."""
    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "blank.jsonl").write_text("\n  \n\n")
    (tmp_path / "header.csv").write_text("prompt,chosen,rejected\n")
    (tmp_path / "shards.jsonl").mkdir()
    (tmp_path / "shards.jsonl" / "part-0.jsonl").write_text(json.dumps(GOOD) + "\n")
    (tmp_path / "utf16.jsonl").write_bytes((json.dumps(GOOD) + "\n").encode("utf-16"))
    (tmp_path / "broken.jsonl.gz").write_bytes(gzip.compress((json.dumps(GOOD) + "\n").encode() * 50)[:40])
    (tmp_path / "notgz.jsonl.gz").write_text(json.dumps(GOOD) + "\n")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    (tmp_path / "wizard.jsonl").write_text(json.dumps({"prompt": [{"role": "wizard", "content": "Hi"}],
                                                       "chosen": [{"role": "assistant", "content": "a"}],
                                                       "rejected": [{"role": "assistant", "content": "b"}]}) + "\n")
    (tmp_path / "nulls.jsonl").write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "rejected": None}) + "\n")
    (tmp_path / "null_content.jsonl").write_text(json.dumps({"prompt": [{"role": "user", "content": None}],
                                                             "chosen": [{"role": "assistant", "content": "a"}],
                                                             "rejected": [{"role": "assistant", "content": "b"}]}) + "\n")
    return {
        "empty": ("empty.jsonl", "empty.jsonl: empty file: no rows"),
        "blank": ("blank.jsonl", "blank.jsonl: empty file: no rows"),
        "header only": ("header.csv", "header.csv: empty file: no rows after the header"),
        "directory": ("shards.jsonl", "shards.jsonl: is a directory, not a file (holding part-0.jsonl): pass one file"),
        "utf-16": ("utf16.jsonl", "utf16.jsonl:1: encoded as UTF-16 (byte-order mark); save it as UTF-8"),
        "truncated gzip": ("broken.jsonl.gz", "broken.jsonl.gz: not a readable .gz file"),
        "not gzip": ("notgz.jsonl.gz", "notgz.jsonl.gz: not a readable .gz file"),
        "broken parquet": ("broken.parquet", "broken.parquet:row 1: not a readable Parquet file"),
        "wrong role": ("wizard.jsonl", "wizard.jsonl:1: field 'prompt': message 0: unknown role 'wizard' "
                                       "(expected one of system, user, assistant, tool)"),
        "null field": ("nulls.jsonl", "nulls.jsonl:2: field 'rejected': null"),
        "null content": ("null_content.jsonl", "null_content.jsonl:1: field 'prompt': message 0: 'content' must be a string, got null"),
    }


NAMES = ["empty", "blank", "header only", "directory", "utf-16", "truncated gzip", "not gzip", "broken parquet",
         "wrong role", "null field", "null content"]


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_a_data_error_naming_the_file(tmp_path, name):
    file, message = bad_inputs(tmp_path)[name]
    with pytest.raises(DataError) as caught:
        read_records(tmp_path / file, "preference")
    assert str(caught.value).startswith(str(tmp_path / file)), str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize("name", ["empty", "directory", "utf-16", "truncated gzip", "wrong role", "null field"])
def test_training_command_exits_non_zero_with_the_message(tmp_path, tiny_dir, name):
    file, message = bad_inputs(tmp_path)[name]
    result = CliRunner().invoke(app, ["dpo", "--model", tiny_dir, "--data", str(tmp_path / file), "--max-steps", "1",
                                      "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # a ClickException, not a traceback
    assert message in result.output


def test_all_rows_skipped_is_an_error_not_an_empty_run(tmp_path, tiny_dir):
    path = tmp_path / "all_bad.jsonl"
    path.write_text(json.dumps({**GOOD, "chosen": ""}) + "\n")
    result = CliRunner().invoke(app, ["dpo", "--model", tiny_dir, "--data", str(path), "--skip-invalid",
                                      "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 1 and f"{path}: no valid rows (1 skipped as invalid)" in result.output


def test_data_inspect_exits_non_zero_on_invalid_rows(tmp_path):
    clean, dirty = tmp_path / "clean.jsonl", tmp_path / "dirty.jsonl"
    clean.write_text(json.dumps(GOOD) + "\n")
    dirty.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "chosen": " 5"}) + "\n")
    assert CliRunner().invoke(app, ["data", "inspect", str(clean)]).exit_code == 0
    result = CliRunner().invoke(app, ["data", "inspect", str(dirty)])
    assert result.exit_code == 1
    assert f"1 of 2 rows are invalid; first: {dirty}:2: field 'chosen': identical to 'rejected'" in result.output
    file, message = bad_inputs(tmp_path)["empty"]
    result = CliRunner().invoke(app, ["data", "inspect", str(tmp_path / file)])
    assert result.exit_code == 1 and message in result.output


def test_a_role_the_chat_template_refuses_names_the_field(tokenizer):
    import copy

    strict = copy.deepcopy(tokenizer)
    # A template in the style of those that take no tool turns (raise_exception is HF's helper).
    strict.chat_template = ("{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('tool turns are not supported') }}"
                            "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tool_prompt = PreferencePair([USER, {"role": "tool", "content": "42"}], [{"role": "assistant", "content": "a"}],
                                 [{"role": "assistant", "content": "b"}])
    with pytest.raises(DataError, match=r"^pairs:row 1: field 'prompt': the chat template refuses these messages "
                                        r"\(roles: user, tool\): tool turns are not supported"):
        encode_dataset(strict, [tool_prompt], max_length=64, source_name="pairs")
    tool_reply = PreferencePair([USER], [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "a"}],
                                [{"role": "assistant", "content": "b"}])
    with pytest.raises(DataError, match=r"^pairs:row 1: field 'chosen': the chat template refuses"):
        encode_dataset(strict, [tool_reply], max_length=64, source_name="pairs")
    # The bundled template renders every known role, tool included.
    assert encode_dataset(tokenizer, [tool_prompt], max_length=64).items
