"""`alignkit run` started again goes on where it stopped (alignkit/stage_record.py).

A two-stage recipe on the tiny model: sft, then dpo from it with a checkpoint every step. A kill
is a RuntimeError raised right after the dpo stage's first checkpoint is on disk: nothing after
it runs, as with `kill -9` there (the kill campaign, tests/reliability, covers real signals).
"""

import dataclasses
import json
import logging

import pytest
import yaml
from click.testing import CliRunner

import alignkit.train.loop as loop
from alignkit.cli import app
from alignkit.train.registry import METHODS


class Killed(RuntimeError):
    pass


@pytest.fixture()
def ran(monkeypatch):
    """The names of the training stages that ran, in order."""
    names = []
    for method in ("sft", "dpo"):
        spec = METHODS[method]

        def run(cfg, spec=spec):
            names.append(cfg.output_dir.rsplit("/", 1)[-1])
            return spec.run(cfg)

        monkeypatch.setitem(METHODS, method, dataclasses.replace(spec, run=run))
    return names


@pytest.fixture()
def kill_dpo_after_step_1(monkeypatch):
    """Arms a kill of the next dpo run right after its step-1 checkpoint is saved."""
    save = loop.save_checkpoint

    def arm():
        def save_then_die(root, step, *args, **kwargs):
            save(root, step, *args, **kwargs)
            if root.parent.name == "dpo" and step == 1:
                monkeypatch.setattr(loop, "save_checkpoint", save)  # one kill
                raise Killed("killed after dpo's step-1 checkpoint")

        monkeypatch.setattr(loop, "save_checkpoint", save_then_die)

    return arm


def write_recipe(tmp_path, tiny_dir, sft_lr=1e-3, dpo_model="stage:sft"):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "name": "resume", "model": tiny_dir, "output_dir": str(tmp_path / "run"),
        "data": "tests/fixtures/pairs_conversational.jsonl",
        "defaults": {"batch_size": 2, "max_steps": 2, "max_length": 64, "threads": 1},
        "stages": [{"name": "sft", "method": "sft", "lr": sft_lr},
                   {"name": "dpo", "method": "dpo", "model": dpo_model, "save_every": 1}]}))
    return path


def run(caplog, *args):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="alignkit"):
        result = CliRunner().invoke(app, ["run", *map(str, args)])
    return result, caplog.messages[:]


def snapshot(directory):
    """Each file's bytes and modification time: equal only if nothing was written there."""
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_killed_stage_reruns_alone_from_its_checkpoint(tmp_path, tiny_dir, caplog, ran, kill_dpo_after_step_1):
    path, out = write_recipe(tmp_path, tiny_dir), tmp_path / "run"
    kill_dpo_after_step_1()
    result, _ = run(caplog, path)
    assert isinstance(result.exception, Killed) and ran == ["sft", "dpo"]
    assert json.loads((out / "dpo" / "stage.json").read_text())["status"] == "running"
    before = snapshot(out / "sft")

    result, messages = run(caplog, path)
    assert result.exit_code == 0, result.output
    assert ran == ["sft", "dpo", "dpo"]  # sft not again
    assert "stage sft: done in a previous run (reused)" in messages
    assert any(m.startswith("resumed from") and m.endswith("step-1 at step 1") for m in messages), messages
    assert snapshot(out / "sft") == before  # byte for byte, timestamps too
    assert [row["step"] for row in map(json.loads, (out / "dpo" / "metrics.jsonl").read_text().splitlines())] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reused_stages"] == ["sft"] and set(summary["seconds_by_stage"]) == {"sft", "dpo"}

    result, messages = run(caplog, path)  # everything finished: nothing runs
    assert result.exit_code == 0 and ran == ["sft", "dpo", "dpo"]
    assert "stage dpo: done in a previous run (reused)" in messages


def test_a_changed_stage_reruns_with_every_stage_after_it(tmp_path, tiny_dir, caplog, ran, kill_dpo_after_step_1):
    """dpo starts from the base model here: nothing it names changes, only the rule "every stage
    after a changed one" reruns it (as a report depends on every eval before it, unnamed)."""
    out = tmp_path / "run"
    result, _ = run(caplog, write_recipe(tmp_path, tiny_dir, sft_lr=1e-3, dpo_model="base"))
    assert result.exit_code == 0, result.output
    before = snapshot(out / "sft")

    kill_dpo_after_step_1()
    result, messages = run(caplog, write_recipe(tmp_path, tiny_dir, sft_lr=2e-3, dpo_model="base"))  # sft changed
    assert isinstance(result.exception, Killed) and ran == ["sft", "dpo", "sft", "dpo"]
    assert not any("reused" in m or m.startswith("resumed from") for m in messages), messages
    assert snapshot(out / "sft").keys() == before.keys() and snapshot(out / "sft") != before

    # The first run's step-2 checkpoint has dpo's settings, so the loop's own check would take it
    # (as it would one trained from an old sft model under the same path); the rerun deleted it,
    # so going on starts from this run's step 1.
    result, messages = run(caplog, write_recipe(tmp_path, tiny_dir, sft_lr=2e-3, dpo_model="base"))
    assert result.exit_code == 0, result.output
    assert ran == ["sft", "dpo", "sft", "dpo", "dpo"]
    assert any(m.startswith("resumed from") and m.endswith("step-1 at step 1") for m in messages), messages


def test_fresh_reruns_every_stage(tmp_path, tiny_dir, caplog, ran):
    path, out = write_recipe(tmp_path, tiny_dir), tmp_path / "run"
    assert run(caplog, path)[0].exit_code == 0
    before = snapshot(out / "sft")
    result, messages = run(caplog, path, "--fresh")
    assert result.exit_code == 0, result.output
    assert ran == ["sft", "dpo", "sft", "dpo"]
    assert not any("reused" in m or m.startswith("resumed from") for m in messages), messages
    assert snapshot(out / "sft") != before
    assert "reused_stages" not in json.loads((out / "summary.json").read_text())


def test_fingerprint_sees_an_edited_file_but_not_the_run_itself(tmp_path):
    """A data file edited in place reruns the stage; what the run writes under output_dir, or the
    recipe file moving, does not."""
    from alignkit.stage_record import stage_fingerprint

    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "a"}\n')
    recipe = {"output_dir": str(tmp_path / "run"), "_file": "a.yaml", "stages": []}
    first = stage_fingerprint(recipe, "dpo", {"data": str(data)}, previous="")
    (tmp_path / "run" / "dpo").mkdir(parents=True)
    (tmp_path / "run" / "dpo" / "stage.json").write_text("{}")
    assert stage_fingerprint({**recipe, "_file": "moved/a.yaml"}, "dpo", {"data": str(data)}, previous="") == first
    data.write_text('{"prompt": "an edit"}\n')
    assert stage_fingerprint(recipe, "dpo", {"data": str(data)}, previous="") != first
