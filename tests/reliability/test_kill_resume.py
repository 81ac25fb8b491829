"""The kill campaign: SIGKILL a training run at 20 moments, resume each time, and require the
loss trajectory and final weights of the uninterrupted run, bit for bit.

Moments: 20 distinct optimizer steps, chosen by a seeded RNG; at each, either a timer from
outside (``kill -9`` at a random instant once the step before it has been logged: mid-step,
mid-log or mid-save, wherever it lands) or a self-kill at a point inside that step's checkpoint
save that a timer rarely hits (see kill_worker.py). One run is killed 20 times in a row: every
resume starts from whatever the previous kill left on disk.

Slow (several minutes per method on quiet cores): ``.venv/bin/python -m pytest tests/reliability
-m slow -s --basetemp=/tmp/kill-campaign`` (a basetemp of its own: on a machine where other pytest
sessions start meanwhile, pytest's default keeps only the 3 newest temp roots and would delete this
one mid-campaign). Don't edit alignkit/ while it runs: every resume imports the working tree, and a
changed config field is, rightly, a refused resume. Counts of the last campaign are in
docs/reliability.md.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from alignkit.train.logger import read_metrics
from tests.reliability.kill_worker import STEPS

ROOT = Path(__file__).resolve().parents[2]
POINTS = ["timer", "weights", "before-rename", "after-rename", "prune"]
KILLS = 20


def start(method: str, out: Path, kill_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "ALIGNKIT_KILL_AT": kill_at or ""}
    return subprocess.Popen([sys.executable, "tests/reliability/kill_worker.py", method, str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def logged_steps(out: Path) -> int:
    try:
        return max((row["step"] for row in read_metrics(out / "metrics.jsonl") if "loss" in row), default=0)
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def kill_by_timer(proc: subprocess.Popen, out: Path, step: int, rng: random.Random) -> None:
    while proc.poll() is None and logged_steps(out) < step - 1:
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.4))
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)


def final_weights(out: Path) -> dict:
    return load_file(out / "model" / "model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dpo", "grpo"])
def test_twenty_kills_leave_the_trajectory_and_weights_unchanged(tmp_path, method):
    reference = tmp_path / "uninterrupted"
    proc = start(method, reference)
    assert proc.wait(timeout=900) == 0, proc.stderr.read().decode()[-3000:]

    rng = random.Random(f"kill-campaign-{method}")
    steps = sorted(rng.sample(range(2, STEPS[method] + 1), KILLS))
    moments = [(step, rng.choice(POINTS)) for step in steps]
    out, killed = tmp_path / "killed", []
    for step, point in moments:
        proc = start(method, out, None if point == "timer" else f"{step}:{point}")
        if point == "timer":
            kill_by_timer(proc, out, step, rng)
        code = proc.wait(timeout=900)
        assert code in (-signal.SIGKILL, 0), proc.stderr.read().decode()[-3000:]
        if code == -signal.SIGKILL:
            killed.append(f"{step}:{point}")
    proc = start(method, out)
    assert proc.wait(timeout=900) == 0, proc.stderr.read().decode()[-3000:]
    print(f"\n{method}: {len(killed)} kills at {killed}")
    assert len(killed) == KILLS

    expected = [(r["step"], r["loss"]) for r in read_metrics(reference / "metrics.jsonl") if "loss" in r]
    got = [(r["step"], r["loss"]) for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert got == expected  # every step once, the same loss to the last bit
    reference_weights, resumed_weights = final_weights(reference), final_weights(out)
    assert reference_weights.keys() == resumed_weights.keys()
    for name, tensor in reference_weights.items():
        assert (resumed_weights[name] == tensor).all(), name
    leftovers = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the last start cleaned what the kills left
