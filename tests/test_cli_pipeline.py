"""The CLI and recipe pipeline end to end on a tiny model and a slice of the bundled data."""

import json

import torch
import yaml
from click.testing import CliRunner

from alignkit.cli import app


def test_help_lists_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("doctor", "data", "sft", "rm", "dpo", "kto", "run", "quickstart"):
        assert command in result.output


def test_data_inspect_shows_pairs_and_summary():
    result = CliRunner().invoke(app, ["data", "inspect", "alignkit/datasets/hhh/helpful.train.jsonl", "--n", "2"])
    assert result.exit_code == 0, result.output
    assert "chosen" in result.output and "rejected" in result.output
    assert "p90" in result.output


def test_bad_data_is_a_clean_error(tmp_path, tiny_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "chosen": "a", "rejected": "b"}\n{"prompt": "hi", "chosen": "", "rejected": "b"}\n')
    result = CliRunner().invoke(app, ["dpo", "--model", tiny_dir, "--data", str(bad), "--output-dir", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "bad.jsonl:2" in result.output and "'chosen'" in result.output


def test_config_file_with_flag_override(tmp_path, tiny_dir):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": tiny_dir, "data": "tests/fixtures/pairs_conversational.jsonl",
                                      "batch_size": 2, "max_steps": 5, "lr": 1e-3, "lora_r": 4}))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["dpo", "--config", str(config), "--max-steps", "1", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["max_steps"] == 1 and resolved["lora_r"] == 4
    assert result.stdout.strip().splitlines()[-1] == f"run directory: {out}"


def test_quickstart_pipeline_on_tiny_model(tmp_path, tiny_dir):
    recipe = yaml.safe_load(open("recipes/quickstart.yaml"))
    recipe["model"] = tiny_dir
    recipe["output_dir"] = str(tmp_path / "qs")
    for stage in recipe["stages"]:
        if stage["method"] in ("rm", "sft", "dpo"):
            stage.update(max_examples=8, batch_size=4, epochs=1, **({"trainable_layers": 1} if stage["method"] == "rm" else {"grad_accum": 2}))
        if stage["method"] == "eval":
            stage.update(limit=12, max_new_tokens=6)  # 10 harmful, 2 benign prompts
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "qs"
    assert result.stdout.strip().splitlines()[-1] == str(out.resolve())
    summary = json.loads((out / "summary.json").read_text())
    assert {"win_rate", "ci_low", "ci_high", "n"} <= set(summary["win_rate"])
    assert summary["win_rate"]["n"] == 12
    assert "judge" in summary["heldout_accuracy"]
    # the names other checks rely on: refusal rates with their counts, peak memory, the aligned model
    assert set(summary["refusal"]) >= {"harmful", "benign", "n_harmful", "n_benign"}
    assert 0 < summary["peak_rss_gb"] == max(summary["peak_rss_gb_by_stage"].values())
    assert set(summary["seconds_by_stage"]) == {"judge", "sft", "opening", "eval", "report"}
    assert summary["policy_model"] == str(out / "opening" / "model")
    assert "both trained on: 0" in summary["judge_provenance"]  # the judge's split is disjoint from the policy's
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html and "http://" not in html and "https://" not in html
    evals = json.loads((out / "eval" / "eval.json").read_text())
    assert len(evals["opening"]["samples"]) == 12
    for stage in ("judge", "sft", "opening"):
        assert json.loads((out / stage / "summary.json").read_text())["steps"] == 2
        assert (out / stage / "metrics.jsonl").read_text().strip()
    # The recipe trains whole layers, not an adapter: the aligned model is a checkpoint transformers loads.
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out / "opening" / "model")


def test_dpo_lab_runs_offline_with_overrides(tmp_path, tiny_dir):
    """The lab as written (SFT warm-up, β 0.1 and 0.5, judge, eval vs SFT, report), shrunk."""
    from alignkit.pipeline import Pipeline, load_recipe

    recipe = load_recipe("recipes/dpo-lab.yaml", {"model": tiny_dir, "data": "hhh", "eval_data": "hhh:test",
                                                   "output_dir": str(tmp_path / "lab")})
    recipe["defaults"].update(max_examples=4, max_length=128)
    for stage in recipe["stages"]:
        if stage["method"] in ("sft", "dpo", "rm"):
            stage.update(batch_size=2, trainable_layers=1) if stage["method"] == "rm" else stage.update(batch_size=2)
        if stage["method"] == "eval":
            stage.update(limit=3, max_new_tokens=4)
    out = Pipeline(recipe).run()
    summary = json.loads((out / "summary.json").read_text())
    assert [row["beta"] for row in summary["ablation"]] == [0.1, 0.5]
    assert all(row["win_rate"] is not None and row["kl"] is not None for row in summary["ablation"])
    html = (out / "report.html").read_text()
    assert "0.5" in html and "data:image/png;base64" in html
    sft_config = json.loads((out / "dpo_beta0.1" / "config.json").read_text())
    assert sft_config["model"].endswith("sft/model") and sft_config["lr"] == 5e-7


def test_a_stage_that_fails_is_one_line_naming_it(tmp_path, tiny_dir):
    """`alignkit run` on a stage raising ValueError (5 pairs, batches of 8): exit 1 and one line, no traceback."""
    recipe = {"name": "too-small", "model": tiny_dir, "output_dir": str(tmp_path / "run"), "stages": [
        {"name": "tiny-dpo", "method": "dpo", "data": "tests/fixtures/pairs_conversational.jsonl", "batch_size": 8}]}
    path = tmp_path / "too-small.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 1 and not isinstance(result.exception, ValueError)  # click's exit, not a crash
    (line,) = result.output.strip().splitlines()
    assert line == ("Error: stage 'tiny-dpo' (dpo) failed: 5 training examples is fewer than one batch of 8 "
                    "(run with -v for the traceback)")


def test_eval_stage_loads_every_model_in_the_recipes_dtype(tmp_path, tiny_dir, monkeypatch):
    """`defaults: {dtype: bfloat16}` reaches the eval stage's policy, baseline and reward-model judge
    (on a GPU the placement default is bf16 whatever the recipe says; an fp32 recipe must stay fp32)."""
    import alignkit.eval.evaluate as evaluate
    from alignkit.models.heads import load_scalar_model
    from alignkit.pipeline import Pipeline

    rm, tokenizer = load_scalar_model(tiny_dir)
    rm.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    seen, real = {}, evaluate.evaluate_policy

    def spy(policy, base, tokenizer, prompts, *, judge=None, **kwargs):
        seen.update(policy=next(policy.parameters()).dtype, base=next(base.parameters()).dtype,
                    judge=next(judge.model.parameters()).dtype)
        return real(policy, base, tokenizer, prompts, judge=judge, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_policy", spy)
    recipe = {"name": "bf16-eval", "model": tiny_dir, "output_dir": str(tmp_path / "run"), "_file": "test",
              "defaults": {"dtype": "bfloat16"}, "stages": [
                  {"name": "eval", "method": "eval", "policies": [tiny_dir], "judge": str(tmp_path / "rm"),
                   "prompts": "hhh:test", "limit": 2, "max_new_tokens": 2}]}
    Pipeline(recipe).run()
    assert seen == {"policy": torch.bfloat16, "base": torch.bfloat16, "judge": torch.bfloat16}
