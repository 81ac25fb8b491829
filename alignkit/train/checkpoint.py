"""Resumable checkpoints, written atomically.

A checkpoint holds what a run needs to continue bit-for-bit: the trainable parameters (full
weights or only the LoRA adapter, whichever requires grad), optimizer and scheduler state, the
RNG states, the optimizer step (the data position is derived from it) and, for an online
method, its own state (the rollout buffer it is part-way through), and what the loop needs to
check a resume (``trainer_state.json``: the run's fingerprint, the fault guard's history). It is
written through :func:`alignkit.atomic.atomic_directory` (temporary directory, fsync'd, renamed
into place), so a kill or a full disk mid-save never leaves a broken one and the previous
checkpoint stays loadable; loading uses safetensors and ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from alignkit.atomic import atomic_directory, remove_directory

STATE_FILE = "trainer_state.json"
METHOD_STATE_FILE = "method_state.pt"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that require grad, by name, detached and contiguous (safetensors wants that)."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))


class CheckpointError(OSError):
    """A checkpoint could not be written (a full disk, say); the previous one is intact."""


def save_checkpoint(root: Path, step: int, model, optimizer, scheduler, *, keep: int = 2,
                    method_state: dict | None = None, trainer_state: dict | None = None) -> Path:
    """Write ``root/step-{step}`` atomically and keep only the newest ``keep`` checkpoints.

    ``method_state``: tensors, numbers, strings and containers of them (``torch.load`` with
    ``weights_only=True`` reads it back), given back to the method on resume. ``trainer_state``:
    JSON values stored beside the step (:func:`read_trainer_state` gives them back)."""
    final = root / f"step-{step}"
    try:
        with atomic_directory(final) as tmp:
            save_file(trainable_state(model), tmp / "trainable.safetensors")
            torch.save(
                {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state()},
                tmp / "optim.pt",
            )
            if method_state is not None:
                torch.save(method_state, tmp / METHOD_STATE_FILE)
            # Written last: a directory holding it is complete (list_checkpoints relies on that).
            (tmp / STATE_FILE).write_text(json.dumps({**(trainer_state or {}), "step": step}))
    except (OSError, RuntimeError, SafetensorError) as exc:  # how torch.save and safetensors report a failed write
        previous = list_checkpoints(root)
        raise CheckpointError(
            f"could not write checkpoint {final}: {exc}; nothing was half-written, the previous checkpoint "
            f"({previous[-1] if previous else 'none'}) is intact"
        ) from exc
    prune_checkpoints(root, keep)
    return final


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (also at start: a kill after a save's rename
    leaves one too many)."""
    for old in list_checkpoints(root)[:-keep]:
        remove_directory(old)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories are never listed)."""
    if not root.exists():
        return []
    done = [p for p in root.glob("step-*") if (p / STATE_FILE).exists()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


def load_checkpoint(path: Path, model, optimizer, scheduler, *, method=None) -> int:
    """Restore a checkpoint into live objects and return its optimizer step; ``method``, when given,
    gets its saved state through ``method.load_state_dict``."""
    weights = load_file(path / "trainable.safetensors")
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != expected:
        raise ValueError(
            f"{path}: checkpoint does not match this model's trainable parameters "
            f"(missing {sorted(expected - set(weights))[:3]}, unexpected {sorted(set(weights) - expected)[:3]})"
        )
    model.load_state_dict(weights, strict=False)
    state = torch.load(path / "optim.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    if method is not None:
        if not (path / METHOD_STATE_FILE).exists():
            raise ValueError(f"{path}: no {METHOD_STATE_FILE}; this checkpoint was not written by an online method")
        method.load_state_dict(torch.load(path / METHOD_STATE_FILE, weights_only=True))
    return read_trainer_state(path)["step"]


def read_trainer_state(path: Path) -> dict:
    """``trainer_state.json`` of a checkpoint: its step and what the loop stored beside it."""
    return json.loads((path / STATE_FILE).read_text())
