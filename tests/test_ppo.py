"""PPO and RLOO on the shared loop: GAE and explained variance by hand, the KL controller, RLOO's
baseline, one PPO step on its own batch, exact resume, a NaN reward, the CLI and the bundled
review openings.

The tiny random model writes noise, so rewards here are test functions with known patterns.
"""

import copy
import json
import math
import shutil

import pytest
import torch

from alignkit.losses import AdaptiveKLController, explained_variance, gae_advantages, rloo_advantages
from alignkit.models import tiny_model
from alignkit.rollout import encode_prompt
from alignkit.train.checkpoint import list_checkpoints
from alignkit.train.logger import read_metrics
from alignkit.train.loop import NonFiniteLossError, Topology, fit
from alignkit.train.online import PromptRow
from alignkit.train.ppo import PPOConfig, RLHFMethod, build_value_model
from alignkit.train.rloo import RLOOConfig

CALLS = {"n": 0}


def alternating(prompts, completions, completion_ids=None, **columns):
    """0, 1, 0, 1 along the rows: every batch has signal."""
    return [float(i % 2) for i in range(len(completions))]


def nan_after_first_call(prompts, completions, completion_ids=None, **columns):
    CALLS["n"] += 1
    return [math.nan if CALLS["n"] > 1 else 0.5] * len(completions)


def _prompts(tokenizer, n=8):
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"Continue this movie review: The film {i} was"}]
        rows.append(PromptRow(prompt, encode_prompt(tokenizer, prompt), {}))
    return rows


def _cfg(tmp_path, cls=PPOConfig, **kw):
    base = dict(output_dir=str(tmp_path), reward=["tests.test_ppo:alternating"], batch_size=4, num_mini_batches=2,
                ppo_epochs=1, max_new_tokens=5, lr=1e-2, warmup_ratio=0.0, seed=3, rollout_dtype="float32", max_steps=2)
    return cls(**(base | kw))


def _method(tmp_path, cls=PPOConfig, seed=0, n_prompts=8, **kw):
    cfg = _cfg(tmp_path, cls, **kw)
    model, tokenizer = tiny_model(seed=seed)
    value = None
    if cls is PPOConfig:
        torch.manual_seed(seed)
        value = _tiny_value(model, tokenizer)
    return RLHFMethod(cfg, model, tokenizer, _prompts(tokenizer, n_prompts), _prompts(tokenizer, 4), value=value)


def _tiny_value(model, tokenizer):
    """A scalar-head copy of the tiny policy (what value_model=policy builds from a directory)."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(model.config)
    config.num_labels = 1
    value = AutoModelForSequenceClassification.from_config(config)
    value.model.load_state_dict(model.model.state_dict())
    value.config.pad_token_id = tokenizer.pad_token_id
    return value


# --- the formulas, by hand -------------------------------------------------------------------------


def test_gae_against_a_hand_unrolled_computation():
    # Row 0: 2 prompt positions, 3 response tokens, 1 pad; row 1: 1 prompt, 5 response tokens.
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1]], dtype=torch.float32)
    rewards = torch.tensor([[9.0, 9.0, 0.1, -0.2, 1.5, 9.0], [9.0, 0.0, 0.3, 0.0, -0.1, 2.0]])
    values = torch.tensor([[5.0, 5.0, 0.4, 0.6, 0.9, 5.0], [5.0, 0.2, -0.3, 0.1, 0.5, 0.8]])
    gamma, lam = 0.9, 0.8
    advantages, returns = gae_advantages(rewards, values, mask, gamma=gamma, lam=lam)
    for b in range(2):
        positions = [t for t in range(6) if mask[b, t]]
        r = [rewards[b, t].item() for t in positions]
        v = [values[b, t].item() for t in positions] + [0.0]  # V after the last token is 0
        deltas = [r[i] + gamma * v[i + 1] - v[i] for i in range(len(r))]
        for i, t in enumerate(positions):
            expected = sum((gamma * lam) ** k * deltas[i + k] for k in range(len(r) - i))
            assert advantages[b, t].item() == pytest.approx(expected, rel=1e-5)
            assert returns[b, t].item() == pytest.approx(expected + v[i], rel=1e-5)
        assert all(advantages[b, t] == 0 and returns[b, t] == 0 for t in range(6) if not mask[b, t])


def test_explained_variance_against_its_formula():
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.float32)
    values = torch.tensor([[0.5, 1.0, -0.2, 7.0], [7.0, 0.3, 0.9, 1.1]])
    returns = torch.tensor([[0.7, 0.8, 0.1, -3.0], [-3.0, 0.0, 1.4, 1.0]])
    picked = [(v, r) for vs, rs, ms in zip(values.tolist(), returns.tolist(), mask.tolist()) for v, r, m in zip(vs, rs, ms) if m]

    def var(xs):
        mean = sum(xs) / len(xs)
        return sum((x - mean) ** 2 for x in xs) / len(xs)

    expected = 1 - var([r - v for v, r in picked]) / var([r for _, r in picked])
    assert explained_variance(values, returns, mask).item() == pytest.approx(expected, rel=1e-5)
    assert explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    assert math.isnan(explained_variance(values, torch.ones(2, 4), mask).item())


def test_adaptive_kl_coefficient_moves_the_right_way():
    controller = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    controller.update(12.0, n_steps=64)  # KL above target: β up by (clipped error 0.2) · 64 / 10,000
    assert controller.kl_coef == pytest.approx(0.1 * (1 + 0.2 * 64 / 10_000))
    high = controller.kl_coef
    controller.update(5.0, n_steps=64)  # below: β down
    assert controller.kl_coef == pytest.approx(high * (1 - (1 / 6) * 64 / 10_000))


@pytest.mark.parametrize("target, direction", [(1e-4, 1), (1e4, -1)])
def test_a_round_updates_kl_coef_towards_the_target(tmp_path, target, direction):
    # A LoRA policy with a trained-looking adapter: its KL to the base is well above 1e-4 and far below 1e4.
    from alignkit.train.lora import apply_lora

    cfg = _cfg(tmp_path, RLOOConfig, target_kl=target, kl_horizon=100, lora_r=4, kl_coef=0.1)
    model, tokenizer = tiny_model(seed=0)
    model = apply_lora(model, cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    method = RLHFMethod(cfg, model, tokenizer, _prompts(tokenizer))
    assert method.reference.mode == "adapter" and method.reference.frozen is None  # one copy of the base
    method.step_items(0, Topology())
    assert method.round_metrics["kl_coef"] == 0.1 and method.round_metrics["kl"] > 1e-3
    assert (method.kl.kl_coef - 0.1) * direction > 0


def test_rloo_baseline_excludes_the_sample_itself():
    rewards = torch.tensor([1.0, 2.0, 4.0, 8.0, 0.0, 0.0, 3.0, 3.0])
    advantages = rloo_advantages(rewards, group_size=4)
    assert advantages[0].item() == pytest.approx(1.0 - (2 + 4 + 8) / 3)
    bumped = rewards.clone()
    bumped[0] += 6.0
    moved = rloo_advantages(bumped, group_size=4) - advantages
    # Sample 0's own reward is not in its baseline (its advantage moves by the whole 6); it moves the
    # others' baselines by 6/3; the other prompt's group is untouched.
    assert moved.tolist() == pytest.approx([6.0, -2.0, -2.0, -2.0, 0, 0, 0, 0])


def test_rloo_round_advantages_are_leave_one_out_of_the_rewards(tmp_path):
    method = _method(tmp_path, RLOOConfig, num_generations=4, kl_coef=0.0)
    rows = method.step_items(0, Topology()) + method.step_items(1, Topology())
    # The alternating reward gives 0, 1, 0, 1 in each group: A = r − mean(others) = ∓2/3.
    assert sorted(round(r.advantage, 5) for r in method.rows) == [-0.66667] * 4 + [0.66667] * 4
    assert len(rows) == 8 and method.round_metrics["reward"] == 0.5


# --- training --------------------------------------------------------------------------------------


def test_one_ppo_step_lowers_the_clipped_loss_on_its_own_batch(tmp_path):
    method = _method(tmp_path, num_mini_batches=1, batch_size=8)
    batch = method.collate(method.step_items(0, Topology()))
    totals = method.batch_totals(batch)
    params = [p for p in method.model.parameters() if p.requires_grad]
    assert any(p is q for p in params for q in method.value.parameters())  # the value model trains too
    optimizer = torch.optim.Adam(params, lr=1e-3)
    before, metrics = method.loss(batch, totals)
    before.backward()
    optimizer.step()
    optimizer.zero_grad()
    after, after_metrics = method.loss(batch, totals)
    assert after.item() < before.item()
    assert after_metrics["loss/policy"] < metrics["loss/policy"] and after_metrics["loss/value"] < metrics["loss/value"]
    for key in ("reward", "reward/penalized", "kl", "kl_coef", "entropy", "clipfrac", "approx_kl",
                "value/explained_variance", "advantages/mean", "advantages/std", "completion_length", "time/generate",
                "time/reward", "time/score"):
        assert key in metrics, key


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_resume_mid_round_reproduces_the_uninterrupted_run(tmp_path):
    # Rounds of 2 minibatches = 2 steps; checkpoints every 3: step-3 is mid-round, so the buffer must
    # come back; the adaptive β must too (it moves every round).
    kw = dict(max_steps=6, save_every=3, keep_checkpoints=3, target_kl=0.01, kl_horizon=50)
    full = _method(tmp_path, **kw)
    start = _weights(full.model)
    fit(full, _cfg(tmp_path, **kw))
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    final = _weights(full.model)
    assert any(not torch.equal(final[n], start[n]) for n in start)
    assert len({r["kl_coef"] for r in rows}) == 3  # one β per round, and it moved
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-3", "step-6"]
    for newer in list_checkpoints(tmp_path / "checkpoints")[1:]:
        shutil.rmtree(newer)  # a crash before step 6 was saved

    # A fresh process loads the same starting model (the frozen reference is a copy of it), then the
    # checkpoint: scrambled trainable weights show that the checkpoint, not the start, is what trains on.
    resumed = _method(tmp_path, **kw)
    with torch.no_grad():
        for param in resumed.model.parameters():
            param.normal_()
    fit(resumed, _cfg(tmp_path, resume=True, **kw))
    again = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in again] == list(range(1, 7))
    for key in ("loss", "kl_coef", "reward", "loss/value"):
        assert [r[key] for r in again] == pytest.approx([r[key] for r in rows], abs=1e-6), key
    for name, value in _weights(resumed.model).items():
        assert torch.allclose(value, final[name], atol=1e-6), name


def test_a_nan_reward_stops_the_run_with_the_weights_intact(tmp_path):
    from safetensors.torch import load_file

    CALLS["n"] = 0
    kw = dict(reward=["tests.test_ppo:nan_after_first_call"], num_mini_batches=1, max_steps=3, save_every=1)
    method = _method(tmp_path, **kw)
    with pytest.raises(NonFiniteLossError, match="round 2"):
        fit(method, _cfg(tmp_path, **kw))
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-1"]
    saved = load_file(tmp_path / "checkpoints" / "step-1" / "trainable.safetensors")
    for name, param in method.model.named_parameters():
        assert torch.equal(param.detach(), saved[name]), name  # no update after the last good step


# --- reward models, the CLI, the bundled prompts --------------------------------------------------


@pytest.fixture(scope="module")
def tiny_rm_dir(tmp_path_factory, tiny_dir):
    """A tiny reward-model run directory (``<run>/model``), on the tiny policy's tokenizer."""
    from alignkit.models.heads import load_scalar_model

    torch.manual_seed(0)
    model, tokenizer = load_scalar_model(tiny_dir)
    run = tmp_path_factory.mktemp("rm")
    model.save_pretrained(run / "model")
    tokenizer.save_pretrained(run / "model")
    return run


def test_value_model_from_the_reward_model(tmp_path, tiny_dir, tiny_rm_dir):
    cfg = _cfg(tmp_path, model=tiny_dir, reward=[str(tiny_rm_dir)], value_model="reward")
    from alignkit.models import load_tokenizer

    value = build_value_model(cfg, load_tokenizer(tiny_dir), "cpu")
    from safetensors.torch import load_file

    trained = load_file(tiny_rm_dir / "model" / "model.safetensors")
    assert torch.equal(value.score.weight, trained["score.weight"])  # its head, not a fresh one


@pytest.mark.parametrize("method", ["ppo", "rloo"])
def test_cli_runs_end_to_end_on_a_reward_model(tmp_path, tiny_dir, tiny_rm_dir, method):
    from click.testing import CliRunner

    from alignkit.cli import app

    out = tmp_path / "run"
    extra = ["--num-generations", "2"] if method == "rloo" else ["--value-model", "reward", "--target-kl", "1.0"]
    result = CliRunner().invoke(app, [
        method, "--model", tiny_dir, "--prompts", "reviews", "--eval-data", "reviews:test", "--eval-limit", "4",
        "--reward", str(tiny_rm_dir), "--reward", "length", "--eval-reward", "vader", "--batch-size", "4",
        "--num-mini-batches", "1", "--max-new-tokens", "4", "--max-steps", "2", "--max-examples", "8", "--lr", "1e-3",
        "--rollout-dtype", "float32", "--missing-eos-penalty", "1.0", "--output-dir", str(out), *extra])
    assert result.exit_code == 0, result.output
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward", "kl", "kl_coef", f"rewards/{tiny_rm_dir.name}/mean", "rewards/length/mean", "reward/penalized"):
        assert key in rows[0], key
    summary = json.loads((out / "summary.json").read_text())
    assert -1 <= summary["eval"]["eval/rewards/vader/mean"] <= 1 and "eval/kl" in summary["eval"]


def test_bundled_reviews_are_what_the_generator_writes(tokenizer):
    from alignkit.datasets.reviews import DIRECTORY, INSTRUCTION, generate
    from alignkit.train.online import load_prompts

    splits = generate()
    for split, rows in splits.items():
        lines = (DIRECTORY / f"reviews.{split}.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == rows
    openings = {split: [r["opening"] for r in rows] for split, rows in splits.items()}
    assert len(openings["train"]) >= 200 and len(openings["test"]) >= 100
    assert not set(openings["train"]) & set(openings["test"])
    lengths = [len(tokenizer(o, add_special_tokens=False)["input_ids"]) for rows in openings.values() for o in rows]
    assert 2 <= min(lengths) and max(lengths) <= 8
    loaded = load_prompts("reviews:test", tokenizer, max_prompt_length=256)
    assert loaded[0].prompt[0]["content"] == INSTRUCTION + openings["test"][0]


def test_ranked_pairs_are_every_pair_with_different_rewards():
    from alignkit.eval.ranked_pairs import pairs_of

    prompt = [{"role": "user", "content": "Continue this movie review: The film was"}]
    rows = pairs_of(prompt, ["a", "b", "c", "d"], [0.5, -0.2, 0.5, 0.9])
    assert len(rows) == 5  # 6 pairs less the tie (a, c)
    assert {(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows} == {
        ("a", "b"), ("d", "a"), ("c", "b"), ("d", "b"), ("d", "c")}
    assert all(r["chosen_score"] > r["rejected_score"] for r in rows)


@pytest.mark.slow  # five stages, each loading models: over 20 s
def test_frontier_recipe_stages_run_on_a_tiny_model(tmp_path, tiny_dir):
    # sample-rank writes pairs the rm and dpo stages read by stage:NAME; ppo optimises the reward
    # model (stage:rm) and evaluates VADER; the frontier stage measures both and reads ppo's curve.
    from alignkit.pipeline import Pipeline

    small = dict(max_steps=1, batch_size=4, max_length=64)
    recipe = {"_file": "t.yaml", "output_dir": str(tmp_path / "r"), "model": tiny_dir, "stages": [
        {"name": "pairs", "method": "sample-rank", "prompts": "reviews", "limit": 6, "samples": 4, "reward": ["vader"],
         "max_new_tokens": 12, "rollout_dtype": "float32"},
        {"name": "rm", "method": "rm", "data": "stage:pairs", **small},
        {"name": "dpo", "method": "dpo", "data": "stage:pairs", "beta": 0.1, **small},
        {"name": "ppo", "method": "ppo", "prompts": "reviews", "eval_data": "reviews:test", "eval_limit": 4,
         "reward": ["stage:rm"], "eval_reward": ["vader"], "max_new_tokens": 4, "num_mini_batches": 1, "eval_on_start": True,
         "rollout_dtype": "float32", **small},
        {"name": "frontier", "method": "frontier", "policies": ["stage:dpo", "stage:ppo"], "curves": ["ppo"],
         "prompts": "reviews:test", "eval_limit": 4, "reward": ["vader"], "max_new_tokens": 4, "rollout_dtype": "float32"}]}
    out = Pipeline(recipe).run()
    pairs = [json.loads(line) for line in (out / "pairs" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["chosen_score"] > p["rejected_score"] for p in pairs)
    points = json.loads((out / "frontier" / "frontier.json").read_text())
    assert [p["method"] for p in points] == ["base", "dpo", "ppo", "ppo (training curve)", "ppo (training curve)"]
    assert points[0]["kl"] == 0.0 and points[1]["beta"] == 0.1
    assert "frontier" in (out / "frontier" / "report.html").read_text()


@pytest.mark.parametrize("name", ["rlhf-ppo", "sentiment-frontier"])
def test_bundled_ppo_recipes_are_valid_configs(name):
    from alignkit.pipeline import load_recipe
    from alignkit.train.registry import METHODS

    recipe = load_recipe(name)
    for stage in recipe["stages"]:
        fields = {k: v for k, v in stage.items() if k not in ("name", "method")}
        if stage["method"] in METHODS:
            METHODS[stage["method"]].config(**{**recipe.get("defaults", {}), **fields})
