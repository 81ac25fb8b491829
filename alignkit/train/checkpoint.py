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
from alignkit.models.sharding import is_main_process, is_sharded

STATE_FILE = "trainer_state.json"
METHOD_STATE_FILE = "method_state.pt"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that require grad, by name, detached and contiguous (safetensors wants that)."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def training_state(model: torch.nn.Module, optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """(trainable weights by name, optimizer state dict) as full tensors on the CPU.

    A sharded model (``--fsdp``) holds 1/N of each on each process: they are gathered to the main
    process (a collective: every process calls this; the others get empty dicts) and written in
    the single-process layout, so any run, sharded or not, resumes from any checkpoint."""
    if not is_sharded(model):
        return trainable_state(model), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    weights = get_model_state_dict(model, options=options)
    by_name = get_optimizer_state_dict(model, optimizer, options=options)
    if not weights:
        return {}, {}
    names = _trainable_names(model)  # a tied head is in the state dict under both names: keep the first
    return {n: weights[n].contiguous() for n in names}, _keyed_by_index(by_name, names)


def _trainable_names(model) -> list[str]:
    # The optimizer's parameter order: the loop builds it from the trainable parameters in order.
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _keyed_by_index(state: dict, names: list[str]) -> dict:
    """torch.distributed.checkpoint keys optimizer state by parameter name; ``optimizer.state_dict()``
    by position. Name -> position, so both kinds of run write one format."""
    index = {name: i for i, name in enumerate(names)}
    return {"state": {index[n]: s for n, s in state["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]]}


def _keyed_by_name(state: dict, names: list[str]) -> dict:
    return {"state": {names[i]: s for i, s in state["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]}


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
                    method_state: dict | None = None, trainer_state: dict | None = None) -> Path | None:
    """Write ``root/step-{step}`` atomically and keep only the newest ``keep`` checkpoints.

    ``method_state``: tensors, numbers, strings and containers of them (``torch.load`` with
    ``weights_only=True`` reads it back), given back to the method on resume. ``trainer_state``:
    JSON values stored beside the step (:func:`read_trainer_state` gives them back).

    Every process calls it (a sharded model's tensors are gathered first); only the main process
    writes, and the others get None."""
    weights, optimizer_state = training_state(model, optimizer)
    if not is_main_process():
        return None
    final = root / f"step-{step}"
    try:
        with atomic_directory(final) as tmp:
            save_file(weights, tmp / "trainable.safetensors")
            torch.save(
                {"optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "rng": _rng_state()},
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
    state = torch.load(path / "optim.pt", weights_only=True)
    if is_sharded(model):  # every process reads the full tensors and keeps its own shard of them
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

        set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
        set_optimizer_state_dict(model, optimizer, _keyed_by_name(state["optimizer"], _trainable_names(model)),
                                 options=StateDictOptions(full_state_dict=True))
    else:
        model.load_state_dict(weights, strict=False)
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
