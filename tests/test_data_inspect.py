"""The inspect view: rows side by side, then a summary returned as a dict."""

import json
from pathlib import Path

from rich.console import Console

from alignkit.data import encode_completion, encode_prompt, inspect_file, read_records

FIXTURES = Path(__file__).parent / "fixtures"


def recording_console():
    return Console(record=True, width=140, color_system=None)


def test_pairs_with_token_counts(tokenizer):
    console = recording_console()
    path = FIXTURES / "pairs_conversational.jsonl"
    summary = inspect_file(path, kind="preference", n=2, tokenizer=tokenizer, console=console)
    text = console.export_text()

    records = read_records(path, "preference").records
    prompt_tokens = [len(encode_prompt(tokenizer, r.prompt)) for r in records]
    chosen_tokens = [len(encode_completion(tokenizer, r.prompt, r.chosen)) for r in records]
    rejected_tokens = [len(encode_completion(tokenizer, r.prompt, r.rejected)) for r in records]

    assert (summary["rows"], summary["valid"], summary["invalid"], summary["unit"]) == (5, 5, 0, "tokens")
    assert summary["lengths"]["prompt"]["max"] == max(prompt_tokens)
    assert summary["lengths"]["chosen"]["p50"] == sorted(chosen_tokens)[2]
    expected_fraction = sum(c > r for c, r in zip(chosen_tokens, rejected_tokens)) / 5
    assert summary["chosen_longer_fraction"] == expected_fraction
    # Rows 1 and 2 shown (prompt above, chosen | rejected beside each other), row 3 not.
    assert "row 1" in text and "row 2" in text and "row 3" not in text
    assert f"prompt · {prompt_tokens[0]} tokens" in text and f"chosen · {chosen_tokens[0]} tokens" in text
    chosen_line = next(line for line in text.splitlines() if "Blue." in line)
    assert "Green." in chosen_line  # side by side: the same screen line
    assert "p50" in text and "chosen longer than rejected" in text


def test_characters_without_tokenizer_and_invalid_rows_counted(tmp_path):
    rows = [
        {"prompt": "Say [bold]hi[/bold]", "chosen": "hi there", "rejected": "no"},
        {"prompt": "x", "chosen": "same", "rejected": "same"},
        {"prompt": "Count", "chosen": "1", "rejected": "1 2 3"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    console = recording_console()
    summary = inspect_file(path, console=console)
    assert (summary["rows"], summary["valid"], summary["invalid"], summary["unit"]) == (3, 2, 1, "chars")
    assert summary["lengths"]["chosen"] == {"p50": 1, "p90": 8, "p99": 8, "max": 8}
    assert summary["chosen_longer_fraction"] == 0.5
    assert summary["invalid_examples"] == [f"{path}:2: field 'chosen': identical to 'rejected'"]
    text = console.export_text()
    assert "Say [bold]hi[/bold]" in text  # data is shown literally, never as rich markup
    assert "identical to 'rejected'" in text
    assert not (tmp_path / "pairs.jsonl.rejects.jsonl").exists()  # inspecting writes nothing


def test_other_kinds(tokenizer):
    console = recording_console()
    summary = inspect_file(FIXTURES / "kto.jsonl", kind="binary", n=2, tokenizer=tokenizer, console=console)
    assert set(summary["lengths"]) == {"prompt", "completion"} and "chosen_longer_fraction" not in summary
    assert "undesirable" in console.export_text()
    summary = inspect_file(FIXTURES / "rankings.jsonl", kind="ranking", n=1, console=recording_console())
    assert summary["valid"] == 2 and set(summary["lengths"]) == {"prompt", "responses"}
