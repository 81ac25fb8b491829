"""A secret in the environment never reaches an artefact: configs, metrics, tracker logs,
checkpoints, models, eval samples, the report, or the console output. And trust_remote_code
stays off unless asked, with a warning when on."""

import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import yaml

from alignkit.train.config import RunConfig

ROOT = Path(__file__).resolve().parent.parent
# Where tools look for credentials, and one name nothing knows about.
SECRET_VARIABLES = ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "WANDB_API_KEY", "MLFLOW_TRACKING_PASSWORD",
                    "ALIGNKIT_PLANTED_SECRET"]


def files_containing(root: Path, needle: bytes) -> list[str]:
    """Every file under ``root`` whose bytes contain ``needle`` (binary files included)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes())


def test_the_grep_finds_a_planted_secret(tmp_path):
    # The check below is only as good as this search: nested, binary and dot files are all read.
    (tmp_path / "a" / ".b").mkdir(parents=True)
    (tmp_path / "a" / ".b" / "weights.bin").write_bytes(b"\x00\x01sk-xyz\xff")
    assert files_containing(tmp_path, b"sk-xyz") == ["a/.b/weights.bin"]


def test_no_artefact_holds_a_planted_secret(tmp_path, tiny_dir):
    secret = f"sk-planted-{uuid.uuid4().hex}"
    recipe = yaml.safe_load(open(ROOT / "recipes" / "quickstart.yaml"))
    recipe.update(model=tiny_dir, output_dir=str(tmp_path / "run"))
    for stage in recipe["stages"]:
        if stage["method"] in ("rm", "dpo"):
            # Checkpoints and a tracker too: every kind of file a run writes.
            stage.update(max_examples=8, batch_size=4, epochs=1, save_every=1, report_to=["tensorboard"])
            if stage["method"] == "rm":
                stage["trainable_layers"] = 1
        if stage["method"] == "eval":
            stage.update(limit=2, max_new_tokens=4)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "PYTHONPATH": str(ROOT), **{name: secret for name in SECRET_VARIABLES}}
    proc = subprocess.run([sys.executable, "-m", "alignkit.cli", "-v", "run", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, timeout=900)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    out = tmp_path / "run"
    written = [p for p in out.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in written}
    assert {".json", ".jsonl", ".safetensors", ".pt", ".html"} <= kinds, kinds  # checkpoints, metrics, report...
    assert any("tfevents" in p.name for p in written)
    assert files_containing(tmp_path, secret.encode()) == []
    assert secret.encode() not in proc.stdout + proc.stderr


def test_trust_remote_code_is_opt_in_and_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="alignkit.train.config"):
        assert RunConfig().trust_remote_code is False
        assert not caplog.records
        RunConfig(trust_remote_code=True, model="someone/custom-model")
    (record,) = caplog.records
    assert "trust_remote_code is on" in record.getMessage() and "someone/custom-model" in record.getMessage()
