"""One training run for the kill campaign: ``kill_worker.py METHOD OUTPUT_DIR``, always resuming.

``ALIGNKIT_KILL_AT=STEP:POINT`` makes the process SIGKILL itself at a point inside the save of
checkpoint STEP, the moments a timer from outside rarely hits:

- ``weights``: after trainable.safetensors is written into the temporary directory;
- ``before-rename``: the temporary directory complete and fsync'd, not yet renamed;
- ``after-rename``: step-STEP in place, older checkpoints not yet pruned;
- ``prune``: part-way through deleting the checkpoint before the previous one.
"""

import os
import shutil
import signal
import sys
from pathlib import Path

import alignkit.atomic as atomic
import alignkit.train.checkpoint as checkpoint
from alignkit.train.loop import fit

STEPS = {"dpo": 24, "grpo": 22}


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def arm(kill_at: str) -> None:
    step, point = kill_at.split(":")
    target = f"step-{step}"
    save_file, replace, rmtree = checkpoint.save_file, atomic.replace_directory, shutil.rmtree

    def save_file_then(tensors, path, *a, **k):
        save_file(tensors, path, *a, **k)
        if point == "weights" and f".{target}.tmp-" in str(path):
            die()

    def replace_then(new, final):
        if point == "before-rename" and final.name == target:
            die()
        replace(new, final)
        if point == "after-rename" and final.name == target:
            die()

    def rmtree_then(path, *a, **k):
        path = Path(path)
        if point == "prune" and ".del-" in path.name and checkpoint.list_checkpoints(path.parent)[-1].name == target:
            inner = path / "x"
            os.remove(next(p for p in inner.iterdir() if p.is_file()))  # part-way through the delete
            die()
        rmtree(path, *a, **k)

    checkpoint.save_file = save_file_then
    atomic.replace_directory = replace_then
    atomic.shutil.rmtree = rmtree_then


def build(method: str, out: str):
    if method == "dpo":
        from alignkit.models import tiny_model
        from alignkit.train.dpo import DPOConfig, DPOMethod, PairItem
        from tests.pairs import make_pairs

        cfg = DPOConfig(output_dir=out, batch_size=4, max_steps=STEPS["dpo"], lr=1e-3, warmup_ratio=0.1, seed=5,
                        reference="precompute", loss="dpo", save_every=1, keep_checkpoints=2, resume=True)
        model, tokenizer = tiny_model(seed=0)
        return DPOMethod(cfg, model, tokenizer, [PairItem(p) for p in make_pairs(16)]), cfg
    if method == "grpo":
        from tests.test_grpo import _cfg, _method

        # Two steps per rollout round: a kill lands mid-round as often as between rounds, so the
        # buffer and the sampling RNG must both come back from the checkpoint.
        kw = dict(batch_size=4, steps_per_generation=2, max_steps=STEPS["grpo"], save_every=1, keep_checkpoints=2,
                  zero_signal="keep", resume=True)
        kinds = ("signal", "signal", "flat", "signal", "signal", "signal")
        return _method(out, kinds, **kw), _cfg(out, **kw)
    raise SystemExit(f"unknown method {method}")


if __name__ == "__main__":
    method_name, output_dir = sys.argv[1], sys.argv[2]
    if os.environ.get("ALIGNKIT_KILL_AT"):
        arm(os.environ["ALIGNKIT_KILL_AT"])
    method, cfg = build(method_name, output_dir)
    fit(method, cfg)
