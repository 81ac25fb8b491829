"""Constitutional AI data steps: critique → revision conversations and rounds, RLAIF pairs from a
judge asked in both orders (ties, unparseable and identical samples counted), rows that the SFT
and DPO readers accept, and `alignkit cai` with the judge in-process and behind alignkit serve."""

import json

import pytest
from click.testing import CliRunner

from alignkit.cai import load_constitution
from alignkit.cai.label import label_pairs
from alignkit.cai.revise import critique_revise

PROMPTS = [[{"role": "user", "content": f"help me with task {i}"}] for i in range(4)]


class Scripted:
    name = "scripted"

    def __init__(self, reply):
        self.reply, self.calls = reply, []

    def chat(self, conversations, *, max_tokens=16, temperature=0.0, seed=0):
        self.calls.append((list(conversations), seed))
        return [self.reply(c, seed) for c in conversations]


def test_critique_revise_conversations_and_rounds(tmp_path):
    from alignkit.data import read_records

    constitution = load_constitution("hhh")
    critiques = {p.critique for p in constitution.principles}
    revisions = {p.revision for p in constitution.principles}
    policy = Scripted(lambda c, s: "first answer")

    def critic(conversation, seed):
        last = conversation[-1]["content"]
        if last in critiques:
            return "it is too short"
        assert last in revisions and conversation[-2]["content"] == "it is too short"
        if "task 3" in conversation[0]["content"]:
            return ""  # an empty revision keeps the previous response
        return conversation[-4]["content"] + " (revised)"

    rows, stats = critique_revise(policy, Scripted(critic), PROMPTS, constitution, rounds=2)
    assert [r["completion"][0]["content"] for r in rows] == ["first answer (revised) (revised)"] * 3 + ["first answer"]
    assert stats == {"prompts": 4, "rounds": 2, "empty_revisions_kept_previous": 2, "changed": 3, "empty_dropped": 0}
    names = [p.name for p in constitution.principles]
    for row in rows:  # rounds rotate through the principles
        first, second = row["cai"]["principles"]
        assert names.index(second) == (names.index(first) + 1) % len(names)
        assert row["cai"]["initial"] == "first answer" and row["prompt"] in PROMPTS
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(read_records(str(path), "sft").records) == 4
    with pytest.raises(ValueError):
        critique_revise(policy, policy, PROMPTS, constitution, rounds=0)


def shown(messages):
    text = messages[-1]["content"]
    a = text.split("[Response A]\n", 1)[1].split("\n\n[Response B]", 1)[0]
    b = text.split("[Response B]\n", 1)[1].split("\n\n", 1)[0]
    return a, b


def test_label_pairs_counts_what_it_cannot_decide(tmp_path):
    from alignkit.data import read_records
    from alignkit.judges.constitution import ConstitutionJudge

    samples = {0: ["short", "same", "x", "tiny"], 1: ["a much longer answer", "same", "y", "a longer one"]}
    policy = Scripted(lambda c, seed: samples[seed][int(c[0]["content"][-1])])

    def judge_reply(messages, seed):
        a, b = shown(messages)
        if {a, b} == {"x", "y"}:
            return "???"
        if "tiny" in (a, b):
            return "A"  # position-biased on prompt 3: cancels to a tie
        return "A" if len(a) > len(b) else "B"

    judge = ConstitutionJudge(Scripted(judge_reply), load_constitution("hhh"), verdict="letter")
    rows, stats = label_pairs(policy, judge, PROMPTS)
    verdicts, mean_letter_mass = stats.pop("verdicts"), stats.pop("mean_letter_mass")
    # decidedness: |s − 0.5| of the two pairs scored in both orders, 0.5 (certain) and 0 (the tie)
    assert stats == {"prompts": 4, "pairs": 1, "identical": 1, "empty": 0, "ties": 1, "unparseable": 1, "decidedness": 0.25}
    assert mean_letter_mass is None  # letter verdicts have no probabilities
    assert verdicts["helpful"] == {"first": 3, "second": 3, "tie": 0, "unparseable": 2, "examples_unparseable": ["???", "???"],
                                   "mean_letter_mass": None}
    (row,) = rows
    assert row["chosen"][0]["content"] == "a much longer answer" and row["rejected"][0]["content"] == "short"
    assert row["rlaif"]["score"] == 1.0
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(read_records(str(path), "preference").records) == 1


@pytest.mark.slow
def test_cai_cli_with_the_judge_in_process_and_over_http(tiny_dir, tmp_path, monkeypatch):
    from alignkit.cli import app
    from alignkit.serve import BackgroundServer, build_app

    runner = CliRunner()
    revised = tmp_path / "revisions.jsonl"
    result = runner.invoke(app, ["cai", "revise", "--model", tiny_dir, "--limit", "2", "--max-tokens", "4", "--output", str(revised)])
    assert result.exit_code == 0, result.output
    revise_stats = json.loads((tmp_path / "revisions.jsonl.stats.json").read_text())
    assert revise_stats["prompts"] == 2 and len(revised.read_text().splitlines()) + revise_stats["empty_dropped"] == 2

    in_process = tmp_path / "pairs-local.jsonl"
    result = runner.invoke(app, ["cai", "label", "--model", tiny_dir, "--limit", "2", "--max-tokens", "4", "--output", str(in_process)])
    assert result.exit_code == 0, result.output
    local_stats = json.loads((tmp_path / "pairs-local.jsonl.stats.json").read_text())

    monkeypatch.setenv("ALIGNKIT_TEST_CAI_KEY", "cai-key")
    with BackgroundServer(build_app(tiny_dir, api_key="cai-key", served_name="judge")) as url:
        over_http = tmp_path / "pairs-http.jsonl"
        result = runner.invoke(app, ["cai", "label", "--model", tiny_dir, "--limit", "2", "--max-tokens", "4",
                                     "--judge", url, "--api-key-env", "ALIGNKIT_TEST_CAI_KEY", "--output", str(over_http)])
    assert result.exit_code == 0, result.output
    http_stats = json.loads((tmp_path / "pairs-http.jsonl.stats.json").read_text())
    assert http_stats["judge"] == f"judge@{url}" and "cai-key" not in json.dumps(http_stats)
    # The same greedy judge model in-process and behind the server: the same verdict counts.
    counts = ("first", "second", "tie", "unparseable")
    assert ({p: [v[k] for k in counts] for p, v in http_stats["verdicts"].items()}
            == {p: [v[k] for k in counts] for p, v in local_stats["verdicts"].items()})
    assert sum(http_stats[k] for k in ("pairs", "identical", "empty", "ties", "unparseable")) == 2
    assert all(sum(v[k] for k in counts) == 4 for v in http_stats["verdicts"].values())  # 2 prompts × 2 orders


class FakePipeline:
    def __init__(self, out, base):
        self.out, self.base, self.recipe = out, base, {}

    def model_path(self, ref):
        return self.base if ref in (None, "base") else ref


def test_cai_stage_rejects_unknown_fields(tmp_path):
    from alignkit.cai.stage import run_cai_stage

    with pytest.raises(ValueError, match="critc"):
        run_cai_stage(FakePipeline(tmp_path, "unused"), "revise", "cai-revise", {"critc": "base"})


@pytest.mark.slow
def test_cai_stages_write_files_later_stages_read(tiny_dir, tmp_path):
    from alignkit.cai.stage import run_cai_stage
    from alignkit.data import read_records

    import torch
    from transformers import AutoModelForCausalLM

    from alignkit.models import load_tokenizer
    from alignkit.models.tiny import tiny_config

    # Untied and widely initialised: the default tiny model answers with whitespace only.
    tokenizer = load_tokenizer(tiny_dir)
    config = tiny_config(tokenizer)
    config.tie_word_embeddings, config.initializer_range = False, 0.2
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    pipeline = FakePipeline(tmp_path, str(tmp_path / "model"))
    revised = run_cai_stage(pipeline, "revise", "cai-revise", {"limit": 2, "max_tokens": 4})
    assert revised["rows"] + revised["stats"]["empty_dropped"] == 2
    assert len(read_records(revised["path"], "sft").records) == revised["rows"]
    try:
        labelled = run_cai_stage(pipeline, "label", "cai-label", {"limit": 3, "max_tokens": 4})
    except ValueError as exc:  # a random tiny judge may decide nothing: said plainly, with the counts
        assert "produced no rows" in str(exc) and "unparseable" in str(exc)
        return
    else:
        assert len(read_records(labelled["path"], "preference").records) == labelled["rows"]


def test_limit_is_a_seeded_sample_across_the_bundled_files():
    from alignkit.cai.commands import _prompts

    everything = _prompts("hhh:train", None)
    first_file = everything[:42]  # harmless.train.jsonl: the first 40 rows would all be harmless prompts
    sample = _prompts("hhh:train", 40)
    assert sample == _prompts("hhh:train", 40) and sample != _prompts("hhh:train", 40, seed=1)
    assert len(sample) == 40 and all(p in everything for p in sample)
    assert sum(p not in first_file for p in sample) > 20  # most come from the other files
