"""A 2-process CPU run (torchrun or accelerate launch, gloo) gives the same losses as one process on the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignkit.train.logger import read_metrics

ROOT = Path(__file__).resolve().parent.parent


# accelerate's --cpu runs one process; its --multi_gpu path is torch.distributed.run, which on a
# machine without CUDA gives gloo processes on the CPU.
LAUNCHERS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"],
    "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2", "--num_machines=1",
                   "--mixed_precision=no", "--dynamo_backend=no"],
}


def _run(out: Path, nproc: int, *extra: str, check: bool = True, launcher: str = "torchrun") -> list[float]:
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # One process takes the global batch of 4 in one micro-batch; two processes take 2 pairs each.
    grad_accum = 1
    worker = ["tests/dist_worker.py", str(out), str(grad_accum), *extra]
    cmd = [*LAUNCHERS[launcher], *worker] if nproc == 2 else [sys.executable, *worker]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert proc.returncode == 0 or not check, proc.stderr.decode()[-3000:]
    return [row["loss"] for row in read_metrics(out / "metrics.jsonl") if "loss" in row]


@pytest.mark.parametrize("launcher", ["torchrun", "accelerate"])
def test_two_processes_match_one(tmp_path, launcher):
    single = _run(tmp_path / "one", 1)
    double = _run(tmp_path / "two", 2, launcher=launcher)
    assert len(single) == len(double) == 3
    assert double == pytest.approx(single, abs=1e-5)
    summary = json.loads((tmp_path / "two" / "train.json").read_text())
    assert summary["world"] == 2 and summary["loss"] == pytest.approx(single[-1], abs=1e-5)


def test_nan_on_one_process_stops_every_process(tmp_path):
    # Process 1's loss turns NaN at step 2. Without agreeing on it, process 0 would wait forever
    # in the gradient all-reduce; with it, both raise before any optimizer step on bad gradients.
    losses = _run(tmp_path / "nan", 2, "1", check=False)
    assert len(losses) == 1  # step 1 logged, step 2 never applied
    errors = {r: (tmp_path / "nan" / f"error-rank{r}.txt").read_text() for r in (0, 1)}
    assert "step 2: loss is nan" in errors[1]
    assert "step 2: non-finite loss on another process" in errors[0]
    assert "weights untouched" in errors[0]
