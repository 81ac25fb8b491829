"""GRPO on 2 CPU processes (torchrun, gloo): each samples its share of the round's prompts, a process
whose groups were all dropped still joins the gradient all-reduce, and the weights stay identical."""

import json
import os
import subprocess
import sys
from pathlib import Path

from alignkit.train.logger import read_metrics

ROOT = Path(__file__).resolve().parent.parent


def test_two_processes_train_the_same_weights(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "tests/grpo_dist_worker.py", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=120)  # a process left out of a collective hangs
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # one model, though the processes had different rows
    assert sorted(r["buffer_rows"] for r in ranks) == [0, 4]  # one process's group was dropped
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["zero_std_groups"] == 0.5  # mean over the processes
    assert rows[0]["grad_norm"] > 0
