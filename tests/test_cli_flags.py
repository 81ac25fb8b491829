"""The training commands are generated from the method registry: every config field is a flag."""

import dataclasses
import json
from typing import Literal

import click
import pytest
from click.testing import CliRunner
from pydantic import Field

from alignkit.cli import app, training_command
from alignkit.losses import PREFERENCE_LOSSES
from alignkit.train.config import RunConfig
from alignkit.train.registry import METHODS


def _flags(command: click.Command) -> dict[str, click.Option]:
    return {param.name: param for param in command.params if isinstance(param, click.Option)}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_config_field_has_a_flag_with_its_docstring(method):
    command = app.commands[method]
    flags = _flags(command)
    config = METHODS[method].config
    assert set(config.model_fields) <= set(flags), set(config.model_fields) - set(flags)
    for name, field in config.model_fields.items():
        assert field.description, f"{method}.{name} has no docstring"
        assert flags[name].help.startswith(field.description), name
        assert f"--{name.replace('_', '-')}" in flags[name].opts
    assert command.help == METHODS[method].summary


def test_loss_choices_come_from_the_loss_table():
    loss = _flags(app.commands["dpo"])["loss"]
    assert list(loss.type.choices) == list(PREFERENCE_LOSSES)
    result = CliRunner().invoke(app, ["dpo", "--loss", "bogus"])
    assert result.exit_code == 2 and "'bogus' is not one of" in result.output


def _captured(monkeypatch, method: str) -> list:
    """Replace the method's runner by one that records the config it was given."""
    seen = []
    spec = METHODS[method]
    monkeypatch.setitem(METHODS, method, dataclasses.replace(spec, run=lambda cfg: seen.append(cfg) or {}))
    return seen


def test_flags_reach_the_config_with_their_types(monkeypatch, tmp_path):
    seen = _captured(monkeypatch, "dpo")
    config = tmp_path / "run.yaml"
    config.write_text("beta: 0.3\nmax-grad-norm: 2.0\nlora_r: 8\n")
    result = CliRunner().invoke(app, [
        "dpo", "--config", str(config), "--loss", "simpo", "--gamma", "0.7", "--label-smoothing", "0.2",
        "--orpo-lambda", "0.3", "--rpo-alpha", "0.5", "--max-grad-norm", "none", "--lr-schedule", "cosine",
        "--report-to", "tensorboard", "--report-to", "mlflow", "--lora-target-modules", "q_proj",
        "--lora-target-modules", "v_proj", "--merge-lora", "--warmup-ratio", "0", "--output-dir", str(tmp_path / "o"),
    ])
    assert result.exit_code == 0, result.output
    (cfg,) = seen
    assert (cfg.loss, cfg.gamma, cfg.label_smoothing, cfg.orpo_lambda, cfg.rpo_alpha) == ("simpo", 0.7, 0.2, 0.3, 0.5)
    assert cfg.beta == 0.3 and cfg.lora_r == 8  # from the file: flags not given leave it alone
    assert cfg.max_grad_norm is None  # "none" overrides the file's 2.0
    assert cfg.lr_schedule == "cosine" and cfg.report_to == ["tensorboard", "mlflow"]
    assert cfg.lora_target_modules == ["q_proj", "v_proj"] and cfg.merge_lora is True and cfg.warmup_ratio == 0.0
    assert result.output.strip().endswith(f"run directory: {tmp_path / 'o'}")


def test_kto_and_rm_fields_reachable(monkeypatch):
    kto, rm = _captured(monkeypatch, "kto"), _captured(monkeypatch, "rm")
    runner = CliRunner()
    assert runner.invoke(app, ["kto", "--desirable-weight", "1.5", "--undesirable-weight", "0.5", "--beta", "0.2",
                               "--reference", "copy"]).exit_code == 0
    assert runner.invoke(app, ["rm", "--margin", "--center-coef", "0.01", "--ensemble", "2",
                               "--trainable-layers", "3"]).exit_code == 0
    assert (kto[0].desirable_weight, kto[0].undesirable_weight, kto[0].beta, kto[0].reference) == (1.5, 0.5, 0.2, "copy")
    assert (rm[0].margin, rm[0].center_coef, rm[0].ensemble, rm[0].trainable_layers) == (True, 0.01, 2, 3)


def test_invalid_value_is_a_clean_error_naming_the_field(monkeypatch):
    _captured(monkeypatch, "dpo")
    result = CliRunner().invoke(app, ["dpo", "--label-smoothing", "0.7"])
    assert result.exit_code == 1 and "field 'label_smoothing'" in result.output
    result = CliRunner().invoke(app, ["dpo", "--beta", "abc"])
    assert result.exit_code == 2 and "'abc' is not a valid float" in result.output


class ToyRLConfig(RunConfig):
    """A method that does not exist yet (what PPO / GRPO will look like)."""

    group_size: int = Field(8, ge=2)
    """Completions sampled per prompt."""
    estimator: Literal["k1", "k3"] = "k3"
    """KL estimator."""
    whiten: bool = True
    """Whiten advantages."""
    clip: float | None = 0.2
    """Ratio clip range (none: no clipping)."""


def test_a_newly_registered_method_gets_its_cli_for_free(monkeypatch):
    from alignkit.train import registry

    monkeypatch.setattr(registry, "METHODS", dict(METHODS))  # register() below stays inside this test
    seen = []
    spec = registry.register("toy", ToyRLConfig, lambda cfg: seen.append(cfg) or {}, "Toy RL.")
    command = training_command("toy", spec)
    result = CliRunner().invoke(command, ["--group-size", "16", "--estimator", "k1", "--no-whiten", "--clip", "none"])
    assert result.exit_code == 0, result.output
    assert (seen[0].group_size, seen[0].estimator, seen[0].whiten, seen[0].clip) == (16, "k1", False, None)
    help_text = CliRunner().invoke(command, ["--help"]).output
    assert "Completions sampled per prompt." in help_text and "[k1|k3]" in help_text


def test_recipe_stage_takes_any_config_field(monkeypatch, tmp_path):
    from alignkit.pipeline import Pipeline

    seen = _captured(monkeypatch, "dpo")
    recipe = {"_file": "t.yaml", "output_dir": str(tmp_path), "model": "m",
              "stages": [{"name": "d", "method": "dpo", "loss": "orpo", "orpo_lambda": 0.25, "data": "x.jsonl"}]}
    Pipeline(recipe).run()
    assert seen[0].loss == "orpo" and seen[0].orpo_lambda == 0.25
    assert json.loads((tmp_path / "summary.json").read_text())["recipe"] is None


def _cli(*args: str) -> tuple[str, str]:
    """Run the CLI in a fresh interpreter (nothing imported yet); (stdout, stderr)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "alignkit.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, proc.stderr


def _noise(stderr: str) -> list[str]:
    """Lines other than alignkit's own progress bar and log lines."""
    lines = [part.strip() for line in stderr.splitlines() for part in line.split("\r")]
    return [line for line in lines if line and not line.startswith(("train:", "INFO alignkit", "WARNING alignkit"))]


def test_quiet_by_default(tmp_path, tiny_dir):
    common = ["--model", tiny_dir, "--data", "tests/fixtures/pairs_conversational.jsonl", "--max-steps", "1",
              "--batch-size", "2"]
    # LoRA without 4-bit: peft imports bitsandbytes, whose CPU 4-bit kernel warning is irrelevant here.
    out, err = _cli("dpo", *common, "--lora-r", "4", "--output-dir", str(tmp_path / "dpo"))
    assert _noise(err) == [] and out == f"run directory: {tmp_path / 'dpo'}\n"
    # A reward model's score head is new by design: transformers' load report only with -v.
    out, err = _cli("rm", *common, "--output-dir", str(tmp_path / "rm"))
    assert _noise(err) == [] and out == f"run directory: {tmp_path / 'rm'}\n"
    assert "LOAD REPORT" in _cli("-v", "rm", *common, "--output-dir", str(tmp_path / "rm-verbose"))[1]


def test_python_api_by_name_takes_the_same_fields(monkeypatch, tmp_path):
    from alignkit.train.registry import run_method

    seen = _captured(monkeypatch, "dpo")
    config = tmp_path / "run.yaml"
    config.write_text("beta: 0.3\nloss: ipo\n")
    run_method("dpo", config, beta=0.2, label_smoothing=None)
    assert (seen[0].beta, seen[0].loss, seen[0].label_smoothing) == (0.2, "ipo", 0.0)
    with pytest.raises(KeyError, match="unknown method 'no-such-method'"):
        run_method("no-such-method")
