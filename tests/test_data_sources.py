"""Readers for every file format, column aliases, and the UltraFeedback / HH-RLHF adapters."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignkit.data import (
    BinaryFeedback,
    PreferencePair,
    PromptOnly,
    Ranking,
    SFTExample,
    from_hh_rlhf,
    from_ultrafeedback_binarized,
    is_conversational,
    read_records,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_rows(name):
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def test_standard_pairs_stay_strings_and_keep_extra_columns():
    result = read_records(FIXTURES / "pairs_standard.jsonl", "preference")
    assert result.n_invalid == 0 and result.rejects_path is None
    first = result.records[0]
    assert isinstance(first, PreferencePair) and not is_conversational(first)
    assert (first.prompt, first.chosen, first.rejected) == ("Question: What is 2 + 2?\nAnswer:", " 4", " 5")
    assert first.meta == {"id": "s1", "category": "math"}
    assert (first.origin.source, first.origin.line) == (str(FIXTURES / "pairs_standard.jsonl"), 1)


def test_conversational_pairs_stay_message_lists():
    records = read_records(FIXTURES / "pairs_conversational.jsonl", "preference").records
    assert len(records) == 5 and all(is_conversational(r) for r in records)
    assert records[2].prompt[0] == {"role": "system", "content": "Answer briefly."}
    assert records[0].chosen == [{"role": "assistant", "content": "Blue."}]


def test_sft_messages_split_at_the_last_assistant_turn():
    records = read_records(FIXTURES / "sft_messages.jsonl", "sft").records
    assert all(isinstance(r, SFTExample) for r in records)
    multi_turn = records[2]
    assert [m["role"] for m in multi_turn.prompt] == ["user", "assistant", "user"]
    assert multi_turn.completion == [{"role": "assistant", "content": "Twelve."}]
    assert multi_turn.meta == {"source": "multi-turn"}


def test_csv_multiline_and_quoted_cells():
    records = read_records(FIXTURES / "sft.csv", "sft").records
    assert len(records) == 4
    assert records[0].prompt == "Q: What is the capital of Spain?\nA:" and records[0].completion == " Madrid."
    assert records[2].prompt == 'Q: Say "hi" in Spanish.\nA:'
    assert records[3].meta == {"topic": "math"} and records[3].origin.unit == "row" and records[3].origin.line == 4


def test_json_array_rows_are_located_by_the_line_they_start_on():
    records = read_records(FIXTURES / "pairs.json", "preference").records
    assert [r.chosen for r in records] == [" 2", " east.", " water."]
    assert [r.origin.line for r in records] == [2, 7, 12]


def test_binary_labels_and_csv_label_words(tmp_path):
    records = read_records(FIXTURES / "kto.jsonl", "binary").records
    assert [r.label for r in records] == [True, False] * 3 and isinstance(records[0], BinaryFeedback)
    path = tmp_path / "kto.csv"
    path.write_text("prompt,completion,label\nHi,Hello,true\nHi,Go away,0\nHi,Hey,No\n")
    assert [r.label for r in read_records(path, "binary").records] == [True, False, False]


def test_prompt_only_answer_aliases():
    records = read_records(FIXTURES / "prompts.jsonl", "prompt").records
    assert all(isinstance(r, PromptOnly) for r in records)
    assert [r.answer for r in records] == ["42", "42", None, "2.5", "366"]
    assert records[4].meta == {"level": 1}


def test_alias_columns_in_a_table_where_unused_aliases_are_null(tmp_path):
    rows = [row for row in fixture_rows("prompts.jsonl") if isinstance(row["prompt"], list)]  # one prompt type per column
    columns = {key: [row.get(key) for row in rows] for row in rows for key in row}  # every column, nulls where absent
    parquet = tmp_path / "prompts.parquet"
    pq.write_table(pa.Table.from_pydict(columns), parquet)
    records = read_records(parquet, "prompt").records
    assert [r.answer for r in records] == ["42", "42", None, "366"]
    assert records[0].meta == {"level": None} and records[3].meta == {"level": 1}


def test_rankings_with_alias_columns():
    records = read_records(FIXTURES / "rankings.jsonl", "ranking").records
    assert all(isinstance(r, Ranking) for r in records)
    assert len(records[0].to_pairs()) == 3
    assert records[1].responses[0] == " catches the worm." and records[1].n_ties == 1 and len(records[1].to_pairs()) == 5


def test_parquet_and_dataset_read_like_jsonl(tmp_path):
    import datasets

    rows = fixture_rows("pairs_conversational.jsonl")
    expected = read_records(FIXTURES / "pairs_conversational.jsonl", "preference").records
    parquet = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    from_parquet = read_records(parquet, "preference").records
    from_dataset = read_records(datasets.Dataset.from_list(rows), "preference").records
    assert from_parquet == expected and from_dataset == expected
    assert from_parquet[4].origin.line == 5 and from_parquet[4].origin.unit == "row"


def test_implicit_prompt_is_the_shared_conversation_prefix():
    user = {"role": "user", "content": "Hi"}
    rows = [{"chosen": [user, {"role": "assistant", "content": "Hello!"}], "rejected": [user, {"role": "assistant", "content": "Go."}]}]
    (pair,) = read_records(rows, "preference").records
    assert pair.prompt == [user] and pair.chosen == [{"role": "assistant", "content": "Hello!"}]


def test_ultrafeedback_adapter_on_schema_exact_rows(tmp_path):
    rows = fixture_rows("ultrafeedback_binarized.jsonl")
    assert set(rows[0]) == {"prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen", "score_rejected"}
    result = from_ultrafeedback_binarized(FIXTURES / "ultrafeedback_binarized.jsonl")
    assert len(result.records) == len(rows) == 6 and result.n_invalid == 0
    first = result.records[0]
    assert first.prompt == [{"content": "What is the capital of France?", "role": "user"}]
    assert first.chosen == [{"content": "The capital of France is Paris.", "role": "assistant"}]
    assert first.rejected == [{"content": "The capital of France is Lyon.", "role": "assistant"}]
    # Scores and id kept; `prompt` and `messages` duplicate the conversation and are not.
    assert first.meta == {"prompt_id": rows[0]["prompt_id"], "score_chosen": 9.0, "score_rejected": 2.0}
    # The hub stores it as Parquet: same records from there.
    parquet = tmp_path / "train_prefs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    assert from_ultrafeedback_binarized(parquet).records == result.records


def test_hh_rlhf_adapter_splits_at_the_last_shared_assistant_turn():
    import datasets

    result = from_hh_rlhf(FIXTURES / "hh_rlhf.jsonl")
    assert len(result.records) == 6 and result.n_invalid == 0
    first = result.records[0]
    assert first.prompt == [{"role": "user", "content": "What are some good vegetables to grow in a small garden?"}]
    assert first.rejected == [{"role": "assistant", "content": "I don't know."}]
    multi = result.records[2]
    assert multi.prompt == [
        {"role": "user", "content": "Can you recommend a book?"},
        {"role": "assistant", "content": "Sure, what genres do you like?"},
        {"role": "user", "content": "I like science fiction."},
    ]
    assert multi.chosen[0]["content"].startswith("You might enjoy")
    # Replies that start with the same words: the split is still at the turn, not mid-reply.
    trip = result.records[4]
    assert len(trip.prompt) == 5 and trip.prompt[-1]["content"] == "Food and history."
    assert trip.chosen[0]["content"].startswith("I suggest the Alfama") and trip.rejected[0]["content"] == "I suggest you stay home."
    from_dataset = from_hh_rlhf(datasets.Dataset.from_list(fixture_rows("hh_rlhf.jsonl")))
    assert from_dataset.records == result.records


def test_unknown_kind_and_file_type(tmp_path):
    with pytest.raises(ValueError, match="unknown kind"):
        read_records(FIXTURES / "kto.jsonl", "pairs")
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_records(tmp_path / "data.txt", "sft")
