"""Property-based fuzzing (hypothesis): no input to a reader, an adapter or the config loader ends
in a traceback. Whatever the bytes or rows, the outcome is records or the one error type of that
layer (DataError for data, ConfigError for configs, RecipeError for recipes), whose message
names the file.

Cases per property: 150 by default (fast); ``ALIGNKIT_FUZZ_EXAMPLES=N`` for a long campaign.
Each property counts the cases it actually ran in ``CASES`` (printed with ``-s``); the counts of
the last long campaign are in docs/reliability.md.
"""

import atexit
import bz2
import gzip
import io
import json
import os
from collections import Counter

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignkit.data import DataError, hh_record, read_records, ultrafeedback_record
from alignkit.data.columns import KINDS
from alignkit.data.detect import DATA_FORMATS
from alignkit.train.config import ConfigError, RunConfig, load_config

EXAMPLES = int(os.environ.get("ALIGNKIT_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
CASES: Counter = Counter()
atexit.register(lambda: CASES and print("\nfuzz cases tried:", dict(CASES)))

# --- what inputs look like: close enough to real rows that they reach deep into the code -------
ROLES = st.sampled_from(["user", "assistant", "system", "tool", "wizard", "", "Human"])
TEXT = st.one_of(st.text(max_size=30), st.sampled_from(["", " ", "\n\nHuman: hi", "\n\nAssistant: yo", "[{", "\udcff"]))
MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": ROLES, "content": TEXT}),
    st.dictionaries(st.sampled_from(["role", "content", "name"]), st.one_of(TEXT, st.none(), st.integers())),
)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT)
VALUE = st.one_of(SCALAR, st.lists(MESSAGE, max_size=4), st.lists(SCALAR, max_size=3),
                  st.dictionaries(TEXT, SCALAR, max_size=2))
COLUMNS = st.sampled_from(["prompt", "chosen", "rejected", "completion", "label", "messages", "responses", "scores",
                           "answer", "prompt_id", "score_chosen", "completions", "rewards", "solution"])
ROW = st.dictionaries(COLUMNS, VALUE, max_size=6)
HH_TRANSCRIPT = st.lists(st.tuples(st.sampled_from(["\n\nHuman:", "\n\nAssistant:", "\n\n", "Human:"]), TEXT), max_size=4).map(
    lambda turns: "".join(tag + text for tag, text in turns))
HH_ROW = st.fixed_dictionaries({"chosen": HH_TRANSCRIPT, "rejected": HH_TRANSCRIPT})


def _only_data_errors(call):
    try:
        call()
    except DataError as exc:
        assert str(exc)  # a message, never an empty one
        return False
    return True


# --- readers: arbitrary bytes under every suffix -------------------------------------------------
SUFFIXES = [".jsonl", ".json", ".csv", ".tsv", ".parquet", ".jsonl.gz", ".jsonl.bz2"]


def _file_bytes():
    rows_as_jsonl = st.lists(ROW, max_size=4).map(lambda rows: "\n".join(json.dumps(r) for r in rows).encode("utf-8", "surrogatepass"))
    return st.one_of(st.binary(max_size=300), rows_as_jsonl,
                     rows_as_jsonl.map(lambda b: b[: len(b) // 2]),  # cut mid-row
                     st.sampled_from([b"", b"\xff\xfe{", b"\xef\xbb\xbf[", b"[{}, ", b"a,b\n\"x", b"PAR1", b"\x00\x00"]))


def _encode_for(suffix: str, data: bytes) -> bytes:
    if suffix.endswith(".gz"):
        return gzip.compress(data)
    if suffix.endswith(".bz2"):
        return bz2.compress(data)
    return data


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), data=_file_bytes(), kind=st.sampled_from(KINDS),
       data_format=st.sampled_from(DATA_FORMATS), skip_invalid=st.booleans())
def test_readers_on_arbitrary_bytes(tmp_path_factory, suffix, data, kind, data_format, skip_invalid):
    CASES["reader bytes"] += 1
    path = tmp_path_factory.mktemp("fuzz") / f"data{suffix}"
    path.write_bytes(_encode_for(suffix, data))
    if kind != "preference" and data_format not in ("auto", "trl"):
        data_format = "auto"
    _only_data_errors(lambda: read_records(path, kind, data_format=data_format, skip_invalid=skip_invalid,
                                           rejects_path=path.with_name("rejects.jsonl")))


@FUZZ
@given(rows=st.lists(ROW, max_size=5), suffix=st.sampled_from([".jsonl", ".parquet", ".csv"]))
def test_readers_on_generated_rows_in_files(tmp_path_factory, rows, suffix):
    CASES["reader rows in files"] += 1
    path = tmp_path_factory.mktemp("fuzz") / f"rows{suffix}"
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8", errors="surrogatepass")
    elif suffix == ".csv":
        import csv

        buffer = io.StringIO()
        writer = csv.writer(buffer)
        keys = sorted({k for r in rows for k in r})
        writer.writerow(keys)
        for r in rows:
            writer.writerow([json.dumps(r[k]) if isinstance(r.get(k), (list, dict)) else r.get(k, "") for k in keys])
        path.write_bytes(buffer.getvalue().encode("utf-8", "surrogateescape"))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:  # arrow refuses mixed-type columns and empty structs: no file to read then
            pq.write_table(pa.Table.from_pylist(rows), path)
        except (pa.ArrowException, OverflowError, UnicodeEncodeError):
            return
    for kind in KINDS:
        _only_data_errors(lambda: read_records(path, kind, skip_invalid=True, rejects_path=path.with_name("r.jsonl")))
        _only_data_errors(lambda: read_records(path, kind))


# --- every kind and schema on in-memory rows (a Dataset or a list) --------------------------------
@FUZZ
@given(rows=st.lists(ROW, max_size=5), kind=st.sampled_from(KINDS), data_format=st.sampled_from(DATA_FORMATS))
def test_every_kind_and_schema_on_generated_rows(rows, kind, data_format):
    CASES["records from rows"] += 1
    if kind != "preference" and data_format not in ("auto", "trl"):
        data_format = "trl"
    _only_data_errors(lambda: read_records(rows, kind, data_format=data_format, source_name="rows"))


# --- the two public-schema adapters ----------------------------------------------------------------
@FUZZ
@given(row=st.one_of(HH_ROW, ROW))
def test_hh_rlhf_adapter(row):
    CASES["hh-rlhf adapter"] += 1
    _only_data_errors(lambda: hh_record(row))


@FUZZ
@given(row=st.one_of(ROW, st.fixed_dictionaries({"prompt": TEXT, "chosen": st.lists(MESSAGE, max_size=3),
                                                 "rejected": st.lists(MESSAGE, max_size=3)})))
def test_ultrafeedback_adapter(row):
    CASES["ultrafeedback adapter"] += 1
    _only_data_errors(lambda: ultrafeedback_record(row))


# --- config files: arbitrary YAML text and arbitrary field values ----------------------------------
YAML_VALUE = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=10)),
                          lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                          max_leaves=6)
FIELDS = st.sampled_from([*RunConfig.model_fields, "bogus", "batch-size", "max-steps"])


def _config_text():
    mappings = st.dictionaries(st.one_of(FIELDS, st.integers(), st.booleans()), YAML_VALUE, max_size=5).map(
        lambda d: yaml.safe_dump(d, allow_unicode=True))
    return st.one_of(mappings, st.text(max_size=80), st.sampled_from(["", "- a\n- b", "a: [", "? x", "!!python/object:os.system {}",
                                                                       "lr: .nan", "lr: 1e999", "batch_size: 3\ngrad_accum: 2"]))


@FUZZ
@given(text=_config_text())
def test_config_loader_on_arbitrary_yaml(tmp_path_factory, text):
    CASES["config yaml"] += 1
    path = tmp_path_factory.mktemp("fuzz") / "run.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(RunConfig, path)
    except ConfigError as exc:
        assert str(path) in str(exc)


@FUZZ
@given(text=_config_text())
def test_recipe_loader_on_arbitrary_yaml(tmp_path_factory, text):
    from alignkit.pipeline import RecipeError, load_recipe

    CASES["recipe yaml"] += 1
    path = tmp_path_factory.mktemp("fuzz") / "recipe.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_recipe(path)
    except RecipeError as exc:
        assert str(path) in str(exc)


def test_fuzzing_can_fail():
    """The harness itself: an adapter that raises something other than DataError is caught."""

    @settings(max_examples=20, database=None)
    @given(row=ROW)
    def broken(row):
        _only_data_errors(lambda: row["prompt"])  # KeyError on most rows

    with pytest.raises(KeyError):
        broken()
