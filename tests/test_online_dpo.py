"""Online DPO on the shared loop: best/worst pairing by label, a judge as the label (position bias
cancelled), one round moves the policy and widens the chosen-vs-rejected margin, exact resume
mid-round, a NaN reward stops with the weights intact, the CLI.

The tiny random model writes noise, so the labels are test functions of the sampled token ids.
"""

import math

import pytest
import torch

from alignkit.models import tiny_model
from alignkit.rollout import encode_prompt
from alignkit.train.checkpoint import list_checkpoints
from alignkit.train.logger import read_metrics
from alignkit.train.loop import NonFiniteLossError, Topology, fit
from alignkit.train.online import PromptRow
from alignkit.train.online_dpo import OnlineDPOConfig, OnlineDPOMethod, best_worst_pairs

SEEN: list[tuple[list[int], float]] = []  # (completion ids, reward) of every row token_sum scored
CALLS = {"n": 0}


def token_sum(prompts, completions, completion_ids=None, **columns):
    """A label that differs between samples: the sum of the sampled token ids, scaled."""
    values = [sum(ids) / 1000.0 for ids in completion_ids]
    SEEN.extend(zip(map(list, completion_ids), values))
    return values


def nan_after_first_call(prompts, completions, completion_ids=None, **columns):
    CALLS["n"] += 1
    return [math.nan if CALLS["n"] > 1 else sum(ids) / 1000.0 for ids in completion_ids]


def _prompts(tokenizer, n=8):
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"Tell me one fact about the number {i}."}]
        rows.append(PromptRow(prompt, encode_prompt(tokenizer, prompt), {}))
    return rows


def _cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), reward=["tests.test_online_dpo:token_sum"], num_generations=3, batch_size=4,
                steps_per_round=1, max_new_tokens=6, lr=5e-3, beta=0.5, warmup_ratio=0.0, seed=3,
                rollout_dtype="float32", max_steps=2)
    return OnlineDPOConfig(**(base | kw))


def _method(tmp_path, seed=0, judge=None, judge_spec=None, **kw):
    model, tokenizer = tiny_model(seed=seed)
    cfg = _cfg(tmp_path, judge=judge_spec, **kw)  # the spec only names the judge; the test passes the object
    return OnlineDPOMethod(cfg, model, tokenizer, _prompts(tokenizer), _prompts(tokenizer, 2), judge=judge)


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# --- pairs -----------------------------------------------------------------------------------------


def test_best_worst_pairs_by_hand():
    labels = [1.0, 3.0, 2.0,  5.0, 5.0, 5.0,  None, 1.0, None,  0.0, None, 4.0]
    assert best_worst_pairs(labels, 3) == [(1, 0), None, None, (11, 9)]


def test_round_pairs_are_each_prompts_best_and_worst_sample(tmp_path):
    SEEN.clear()
    method = _method(tmp_path)
    method.fill(0, Topology())
    assert method.rows, "the token-sum label should separate some samples"
    groups = [SEEN[g : g + 3] for g in range(0, len(SEEN), 3)]
    assert len(groups) == method.prompts_per_round
    for chosen, rejected in method.rows:
        group = next(g for g in groups if any(ids == chosen.completion_ids for ids, _ in g))
        values = [v for _, v in group]
        assert chosen.advantage == max(values) and rejected.advantage == min(values) and max(values) > min(values)
        assert any(ids == rejected.completion_ids for ids, _ in group)
        assert chosen.ref_logps is not None and len(chosen.ref_logps) == len(chosen.completion_ids)
    assert method.round_metrics["pairs"] + method.round_metrics["pairs/no_preference"] == method.prompts_per_round


class FirstShownJudge:
    """Always prefers the response shown first: pure position bias, no opinion."""

    def judge(self, prompts, responses_a, responses_b):
        return [1.0] * len(prompts)


class LongerJudge:
    """Prefers the longer response, whichever slot it is in."""

    def judge(self, prompts, responses_a, responses_b):
        return [0.5 if len(a) == len(b) else float(len(a) > len(b)) for a, b in zip(responses_a, responses_b)]


def test_a_position_biased_judge_gives_no_pairs_and_a_fair_one_does(tmp_path):
    biased = _method(tmp_path, judge=FirstShownJudge(), reward=[], judge_spec="test")
    biased.fill(0, Topology())
    assert biased.rows == [] and biased.round_metrics["pairs/no_preference"] == biased.prompts_per_round
    fair = _method(tmp_path, judge=LongerJudge(), reward=[], judge_spec="test")
    fair.fill(0, Topology())
    assert fair.rows
    for chosen, rejected in fair.rows:
        text = fair.tokenizer.decode
        assert len(text(chosen.completion_ids, skip_special_tokens=True)) > len(text(rejected.completion_ids, skip_special_tokens=True))


def test_config_needs_a_label_and_rounds_set_the_steps(tmp_path):
    with pytest.raises(ValueError, match="reward .* or a judge"):
        OnlineDPOConfig(output_dir=str(tmp_path))
    assert OnlineDPOConfig(output_dir=str(tmp_path), judge="x", rounds=3, steps_per_round=2).max_steps == 6
    with pytest.raises(ValueError, match="contradicts"):
        OnlineDPOConfig(output_dir=str(tmp_path), judge="x", rounds=3, max_steps=4)


# --- training --------------------------------------------------------------------------------------


def test_a_round_moves_the_policy_and_widens_the_margin_on_its_pairs(tmp_path):
    method = _method(tmp_path, steps_per_round=2, max_steps=2, batch_size=4)
    method.fill(0, Topology())  # the round fit will train on (same round index: not refilled)
    batch = method.collate([pair for pair in method.rows])
    with torch.no_grad():
        _, before = method.loss(batch)
    start = _weights(method.model)
    fit(method, _cfg(tmp_path, steps_per_round=2, max_steps=2, batch_size=4))
    with torch.no_grad():
        _, after = method.loss(method.collate(method.rows))
    assert abs(before["rewards/margins"]) < 1e-3  # policy = reference before any step
    assert after["rewards/margins"] > before["rewards/margins"] + 0.05
    assert any(not torch.equal(value, start[name]) for name, value in _weights(method.model).items())
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2] and all("pairs" in r and "reward" in r for r in rows)


def test_resume_mid_round_reproduces_the_uninterrupted_run(tmp_path):
    # Rounds of 2 steps; checkpoints every 3: step-3 is mid-round, so the round's pairs must come back.
    kw = dict(steps_per_round=2, max_steps=4, save_every=3, keep_checkpoints=3, batch_size=2)
    full = _method(tmp_path, **kw)
    fit(full, _cfg(tmp_path, **kw))
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    final = _weights(full.model)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-3"]

    # A fresh process loads the same start (the frozen reference copies it), then the checkpoint:
    # scrambled trainable weights show that the checkpoint, not the start, is what trains on.
    resumed = _method(tmp_path, **kw)
    with torch.no_grad():
        for param in resumed.model.parameters():
            param.normal_()
    fit(resumed, _cfg(tmp_path, resume=True, **kw))
    again = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in again] == list(range(1, 5))
    for key in ("loss", "reward", "pairs", "rewards/margins"):
        assert [r[key] for r in again] == pytest.approx([r[key] for r in rows], abs=1e-6), key
    for name, value in _weights(resumed.model).items():
        assert torch.allclose(value, final[name], atol=1e-6), name


def test_a_nan_reward_stops_the_run_with_the_weights_intact(tmp_path):
    from safetensors.torch import load_file

    CALLS["n"] = 0
    kw = dict(reward=["tests.test_online_dpo:nan_after_first_call"], max_steps=3, save_every=1)
    method = _method(tmp_path, **kw)
    with pytest.raises(NonFiniteLossError, match="step 2: non-finite rewards"):
        fit(method, _cfg(tmp_path, **kw))
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-1"]
    saved = load_file(tmp_path / "checkpoints" / "step-1" / "trainable.safetensors")
    for name, param in method.model.named_parameters():
        assert torch.equal(param.detach(), saved[name]), name  # no update after the last good step


def test_cli_runs_end_to_end(tmp_path, tiny_dir):
    import json

    from click.testing import CliRunner

    from alignkit.cli import app

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say something about {i}."}) + "\n" for i in range(4)))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["online-dpo", "--model", str(tiny_dir), "--prompts", str(prompts),
                                      "--reward", "tests.test_online_dpo:token_sum", "--batch-size", "2", "--rounds", "2",
                                      "--max-new-tokens", "4", "--output-dir", str(out), "--rollout-dtype", "float32"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and (out / "model" / "config.json").exists()
