"""GRPO on the shared loop: loss wiring by hand, zero-signal groups, resume equality, the CLI.

The tiny random model writes noise, so the rewards here are test functions that give every
group a known pattern: prompts whose ``kind`` column is "flat" get 1.0 for every completion (a
zero-signal group); the others alternate 0, 1, 0, 1 over their G rows (advantages ±0.866).
"""

import json
import math
import shutil

import pytest
import torch

from alignkit.models import tiny_model
from alignkit.rollout import encode_prompt
from alignkit.train.checkpoint import list_checkpoints
from alignkit.train.grpo import GRPOConfig, GRPOMethod
from alignkit.train.logger import read_metrics
from alignkit.train.loop import Topology, fit
from alignkit.train.online import PromptRow, RolloutRow, completion_logps, load_prompts


def patterned(prompts, completions, completion_ids=None, *, kind, **columns):
    """1.0 everywhere for "flat" prompts; 0, 1, 0, 1 along the rows of the others."""
    return [1.0 if k == "flat" else float(i % 2) for i, k in enumerate(kind)]


def _prompts(tokenizer, kinds):
    rows = []
    for i, kind in enumerate(kinds):
        prompt = [{"role": "user", "content": f"What is {i} + {i}?"}]
        rows.append(PromptRow(prompt, encode_prompt(tokenizer, prompt), {"answer": str(2 * i), "kind": kind}))
    return rows


def _cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), reward=["tests.test_grpo:patterned"], num_generations=4, batch_size=8,
                max_new_tokens=6, lr=1e-2, warmup_ratio=0.0, seed=3, rollout_dtype="float32", max_steps=3)
    return GRPOConfig(**(base | kw))


def _method(tmp_path, kinds=("signal", "flat"), seed=0, **kw):
    model, tokenizer = tiny_model(seed=seed)
    return GRPOMethod(_cfg(tmp_path, **kw), model, tokenizer, _prompts(tokenizer, kinds))


# --- the loss, by hand -----------------------------------------------------------------------------


def _rows_with_offsets(method):
    """Four rows from the engine; sampling log-probs set to the trainer's minus a known offset δ per
    token (0.5, or 2.0 on every third token: exp(2) > the cap 3 is truncated)."""
    rollouts = method.engine.generate([p.prompt_ids for p in method.train_items[:1]], n=4, max_new_tokens=6, seed=1)
    advantages = [1.0, -0.5, 2.0, -1.0]
    lengths = [6, 2, 4, 5]  # uneven, so the token mean, the sequence mean and Dr. GRPO's constant differ
    rows = [RolloutRow(p, c[:n], [0.0] * n, a)
            for p, c, a, n in zip(rollouts.prompt_ids, rollouts.completion_ids, advantages, lengths)]
    trainer = completion_logps(method.model, rows, method.pad_id)
    offsets = [[2.0 if t % 3 == 0 else 0.5 for t in range(len(r.completion_ids))] for r in rows]
    for row, logps, deltas in zip(rows, trainer, offsets):
        row.sampling_logps = [lp - d for lp, d in zip(logps, deltas)]
    return rows, offsets, trainer


@pytest.mark.parametrize("loss_type", ["dapo", "bnpo", "grpo", "dr_grpo", "gspo"])
def test_loss_against_hand_computation(tmp_path, loss_type):
    # On-policy (π_old = π_θ): the clipped ratio is 1, so each token's loss is -A · w with the
    # truncated importance weight w = min(exp(δ), 3); the variants differ only in what they divide by.
    method = _method(tmp_path, loss_type=loss_type)
    rows, offsets, _ = _rows_with_offsets(method)
    weights = [[min(math.exp(d), 3.0) for d in ds] for ds in offsets]
    per_row = [-row.advantage * sum(w) for row, w in zip(rows, weights)]
    tokens = sum(len(ds) for ds in offsets)
    expected = {
        "dapo": sum(per_row) / tokens,
        "bnpo": sum(per_row) / tokens,
        "grpo": sum(p / len(ds) for p, ds in zip(per_row, offsets)) / len(rows),
        "gspo": sum(p / len(ds) for p, ds in zip(per_row, offsets)) / len(rows),
        "dr_grpo": sum(per_row) / (len(rows) * 6),
    }[loss_type]
    loss, metrics = method.loss(method.collate(rows), {"examples": len(rows), "tokens": tokens})
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    every = [d for ds in offsets for d in ds]
    assert metrics["is/mismatch"] == pytest.approx(sum(every) / len(every), rel=1e-4)
    assert metrics["is/truncated"] == pytest.approx(every.count(2.0) / len(every))
    assert metrics["clip_ratio/region_mean"] == 0.0


def test_gspo_ratio_is_the_length_normalised_sequence_ratio():
    from alignkit.losses import grpo_loss

    # One sequence, log ρ_t = 0.1, -0.3, 0.5 (mean 0.1), A = 1: GSPO's ratio is s = exp(0.1) on every
    # token; per-token GRPO clips exp(0.5) at 1.2 instead.
    old = torch.zeros(1, 3)
    logps = torch.tensor([[0.1, -0.3, 0.5]])
    mask, advantage = torch.ones(1, 3), torch.ones(1)
    gspo, _ = grpo_loss(logps=logps, old_logps=old, advantages=advantage, mask=mask, aggregation="gspo")
    assert gspo.item() == pytest.approx(-math.exp(0.1), rel=1e-6)
    token, _ = grpo_loss(logps=logps, old_logps=old, advantages=advantage, mask=mask, aggregation="grpo")
    assert token.item() == pytest.approx(-(math.exp(0.1) + math.exp(-0.3) + 1.2) / 3, rel=1e-6)
    clipped, metrics = grpo_loss(logps=logps, old_logps=old, advantages=advantage, mask=mask, aggregation="gspo",
                                 epsilon_low=3e-4, epsilon_high=4e-4)  # the paper's clip range
    assert clipped.item() == pytest.approx(-1.0004, rel=1e-6) and metrics["clip_ratio/high_mean"] == 1.0


def test_loss_is_a_share_of_the_global_batch_and_adds_k3(tmp_path):
    # Given the global batch's totals, a micro-batch returns its share; β · k3 is added per token.
    method = _method(tmp_path, beta=0.1, is_cap=None, old_logps="sampling")
    rows, offsets, trainer = _rows_with_offsets(method)
    for row, logps in zip(rows, trainer):
        row.sampling_logps = list(logps)  # π_old = the engine's = π_θ: ratio 1, no correction
        row.ref_logps = [lp - 0.5 for lp in logps]  # log r = -0.5 on every token
    k3 = math.exp(-0.5) + 0.5 - 1
    tokens = sum(len(r.completion_ids) for r in rows)
    per_row = [len(r.completion_ids) * (-r.advantage + 0.1 * k3) for r in rows]
    loss, metrics = method.loss(method.collate(rows[:2]), {"examples": 40, "tokens": 3 * tokens})
    assert loss.item() == pytest.approx(sum(per_row[:2]) / (3 * tokens), rel=1e-5)
    assert metrics["kl"] == pytest.approx(k3, rel=1e-5)


# --- the buffer: advantages, zero-signal groups ----------------------------------------------------


def test_zero_signal_group_is_dropped_and_counted(tmp_path):
    method = _method(tmp_path, kinds=("signal", "flat"), zero_signal="drop")
    items = method.step_items(0, Topology())
    assert len(items) == 4  # the signal group only
    assert sorted(r.advantage for r in items) == pytest.approx([-0.866, -0.866, 0.866, 0.866], abs=1e-3)
    assert method.round_metrics["zero_std_groups"] == 0.5 and method.round_metrics["buffer/groups"] == 1
    assert method.round_metrics["reward"] == pytest.approx((1.0 * 4 + 0.5 * 4) / 8)

    kept = _method(tmp_path, kinds=("signal", "flat"), zero_signal="keep")
    items = kept.step_items(0, Topology())
    assert len(items) == 8 and sorted(r.advantage for r in items)[2:6] == [0.0] * 4  # the flat group: exactly 0
    assert kept.round_metrics["zero_std_groups"] == 0.5


def test_resample_replaces_zero_signal_groups_from_fresh_prompts(tmp_path):
    method = _method(tmp_path, kinds=("flat", "flat", "signal", "flat", "signal", "signal"), zero_signal="resample",
                     resample_attempts=4)
    items = method.step_items(0, Topology())
    assert len(items) == 8 and method.round_metrics["buffer/groups"] == 2  # a full buffer of signal groups
    assert all(r.advantage != 0 for r in items)
    generated = method.cursor  # prompts drawn (2 per attempt)
    assert generated > 2 and 0 < method.round_metrics["zero_std_groups"] < 1


def test_every_group_dropped_gives_a_zero_step(tmp_path):
    method = _method(tmp_path, kinds=("flat", "flat"))
    summary = fit(method, _cfg(tmp_path, max_steps=1))
    assert summary["train"]["loss"] == 0.0 and summary["train"]["zero_std_groups"] == 1.0


def test_lora_reference_is_the_adapter_disabled_base(tmp_path):
    from alignkit.train.lora import apply_lora

    cfg = _cfg(tmp_path, beta=0.04, lora_r=4)
    model, tokenizer = tiny_model(seed=0)
    model = apply_lora(model, cfg)
    with torch.no_grad():  # a trained-looking adapter, so policy and base differ
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    method = GRPOMethod(cfg, model, tokenizer, _prompts(tokenizer, ("signal", "signal")))
    assert method.reference.mode == "adapter" and method.reference.frozen is None  # one copy of the weights
    rows = method.step_items(0, Topology())
    with model.disable_adapter():
        base = completion_logps(model, rows, method.pad_id)
    policy = completion_logps(model, rows, method.pad_id)
    assert [r.ref_logps for r in rows] == base
    assert not all(torch.allclose(torch.tensor(a), torch.tensor(b)) for a, b in zip(policy, base))


# --- training and resume ---------------------------------------------------------------------------


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_resume_mid_round_reproduces_the_uninterrupted_run(tmp_path):
    # 2 steps per round (steps_per_generation=2), checkpoints every 3: step-3 is in the middle of
    # round 2, so resuming there must restore the buffer, and rounds 3 and 4 must sample what the
    # uninterrupted run sampled (seeds from the round); π_old is recomputed (several steps per round).
    kinds = ("signal", "signal", "flat", "signal", "signal", "signal")  # round 2 has signal (seed 3)
    kw = dict(batch_size=4, steps_per_generation=2, max_steps=7, save_every=3, keep_checkpoints=3, zero_signal="keep")
    full = _method(tmp_path, kinds, **kw)
    start = _weights(full.model)
    fit(full, _cfg(tmp_path, **kw))
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    final = _weights(full.model)
    assert any(not torch.equal(final[n], start[n]) for n in start)  # it trained
    assert any(loss != 0 for loss in losses)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-3", "step-6"]
    shutil.rmtree(list_checkpoints(tmp_path / "checkpoints")[-1])  # a crash before step 6 was saved

    resumed = _method(tmp_path, kinds, seed=99, **kw)
    fit(resumed, _cfg(tmp_path, resume=True, **kw))
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert [r["loss"] for r in rows] == pytest.approx(losses, abs=1e-7)
    for name, value in _weights(resumed.model).items():
        assert torch.allclose(value, final[name], atol=1e-7), name


# --- data and CLI ----------------------------------------------------------------------------------


def test_cli_runs_end_to_end(tmp_path, tiny_dir):
    from click.testing import CliRunner

    from alignkit.cli import app

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"Say {i}."}], "answer": str(i),
                                           "kind": "signal"}) + "\n" for i in range(4)))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "grpo", "--model", tiny_dir, "--prompts", str(prompts), "--eval-data", str(prompts),
        "--reward", "tests.test_grpo:patterned", "--reward", "format", "--reward-weights", "1", "--reward-weights", "0.5",
        "--num-generations", "4", "--batch-size", "8", "--loss-type", "dr_grpo", "--max-new-tokens", "5",
        "--max-steps", "2", "--lr", "1e-2", "--rollout-dtype", "float32", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward", "zero_std_groups", "rewards/patterned/mean", "rewards/format/mean", "completion_length",
                "is/mismatch", "clip_ratio/region_mean", "time/generate"):
        assert key in rows[0], key
    summary = json.loads((out / "summary.json").read_text())
    assert "eval/rewards/patterned/mean" in summary["eval"]
    # pass@1 by the first reward: the patterned reward gives 1.0 on odd rows of a call (2 of 4 prompts).
    assert summary["eval"]["eval/pass@1"] == 0.5
    assert summary["eval"]["eval/pass@1/ci_low"] < 0.5 < summary["eval"]["eval/pass@1/ci_high"]
    from safetensors.torch import load_file

    before, after = load_file(f"{tiny_dir}/model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert any(not torch.equal(before[n], after[n]) for n in before)  # parameters moved


def test_bundled_arith_task_is_what_the_generator_writes(tokenizer):
    from alignkit.datasets.arith import DIRECTORY, generate
    from alignkit.rewards import math_answer

    splits = generate()
    for split, rows in splits.items():
        lines = (DIRECTORY / f"arith.{split}.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == rows
    questions = {split: {r["prompt"][0]["content"] for r in rows} for split, rows in splits.items()}
    assert not questions["train"] & questions["test"] and len(questions["test"]) == len(splits["test"])
    loaded = load_prompts("arith:test", tokenizer, max_prompt_length=256)
    assert len(loaded) == 200 and loaded[0].columns["answer"] == splits["test"][0]["answer"]
    row = splits["test"][0]
    assert math_answer([row["prompt"]], [f"Adding them up.\nAnswer: {row['answer']}"], answer=[row["answer"]]) == [1.0]


def test_bundled_constraints_task_is_what_the_generator_writes(tokenizer):
    from alignkit.datasets.constraints import DIRECTORY, KINDS, TOPIC_WORDS, TOPICS, generate
    from alignkit.rewards import instruction_constraints

    splits = generate()
    for split, rows in splits.items():
        lines = (DIRECTORY / f"constraints.{split}.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == rows
    topics = {split: {t for t in TOPICS for r in rows if t in r["prompt"][0]["content"]} for split, rows in splits.items()}
    assert topics["test"] and not topics["train"] & topics["test"]  # held-out topics
    texts = {text: c for choices in KINDS.values() for text, c in choices}
    for row in splits["test"]:
        spoken = {k: v for text, c in texts.items() if text in row["prompt"][0]["content"] for k, v in c.items()}
        checked = dict(row["constraints"])
        topic_words = checked.pop("mentions")  # unstated: the answer names the topic the task asks about
        assert spoken == checked  # the instructions in words are the other checked ones
        assert [t for t in TOPIC_WORDS if t in row["prompt"][0]["content"]] and any(
            TOPIC_WORDS[t] == topic_words for t in TOPIC_WORDS if t in row["prompt"][0]["content"])
    loaded = load_prompts("constraints:test", tokenizer, max_prompt_length=256)
    assert loaded[0].columns["constraints"] == splits["test"][0]["constraints"]
    scores = instruction_constraints([r.prompt for r in loaded], ["- A\n- B"] * len(loaded),
                                     constraints=[r.columns["constraints"] for r in loaded])
    assert all(0.0 <= s <= 1.0 for s in scores)  # every key is one the reward knows


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])  # token and sequence normalisers (dr_grpo's: by hand above)
def test_micro_batches_add_up_to_the_global_batch(tmp_path, loss_type):
    # Rows of uneven lengths split 1 + 3 with the global totals: the summed gradients equal the
    # whole batch's (what the loop's grad_accum and several processes rely on).
    method = _method(tmp_path, loss_type=loss_type)
    rows, _, _ = _rows_with_offsets(method)
    totals = {"examples": len(rows), "tokens": sum(len(r.completion_ids) for r in rows)}
    params = [p for p in method.model.parameters() if p.requires_grad]

    def grads(parts):
        method.model.zero_grad()
        for part in parts:
            method.loss(method.collate(part), totals)[0].backward()
        return [p.grad.clone() for p in params]

    whole, split = grads([rows]), grads([rows[:1], rows[1:]])
    assert any(g.abs().max() > 0 for g in whole)
    for a, b in zip(whole, split):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_recipe_reports_heldout_pass_at_1_before_and_after(tmp_path, tiny_dir):
    from alignkit.pipeline import Pipeline

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say {i}.", "kind": "signal"}) + "\n" for i in range(4)))
    recipe = {"_file": "t.yaml", "output_dir": str(tmp_path / "r"), "model": tiny_dir, "stages": [
        {"name": "grpo", "method": "grpo", "prompts": str(prompts), "eval_data": str(prompts), "eval_on_start": True,
         "reward": ["tests.test_grpo:patterned"], "num_generations": 4, "batch_size": 8, "max_new_tokens": 4,
         "max_steps": 1, "rollout_dtype": "float32"}]}
    out = Pipeline(recipe).run()
    runs = json.loads((out / "summary.json").read_text())["heldout_pass@1"]["grpo"]
    assert set(runs) == {"before", "after"} and runs["before"][""] == 0.5  # odd rows of the call pass
    assert runs["before"]["/ci_low"] < 0.5 < runs["before"]["/ci_high"]
    assert read_metrics(out / "grpo" / "metrics.jsonl")[0]["step"] == 0  # the baseline, logged at step 0


@pytest.mark.parametrize("name", ["grpo-arith", "grpo-constraints"])
def test_bundled_grpo_recipes_are_valid_configs(name):
    from alignkit.pipeline import load_recipe

    recipe = load_recipe(name)
    (stage,) = [dict(s) for s in recipe["stages"] if s["method"] == "grpo"]
    stage.pop("name"), stage.pop("method")
    cfg = GRPOConfig(**{**recipe.get("defaults", {}), **stage})
    assert cfg.eval_on_start and cfg.eval_data.endswith(":test")
