"""Where reference log-probs come from: a frozen copy, the LoRA base, or a one-off precompute.

- ``copy``: a frozen deep copy of the starting model, run every step (TRL's default).
- ``adapter``: the same weights with the LoRA adapter switched off — one model in memory.
- ``precompute``: log-probs computed once before training (by the starting model, or the base
  under the adapter) and cached with each example; nothing reference-shaped exists during training.
``auto`` picks ``precompute``: for offline preference data the reference never changes, so
computing it once is the least work.
"""

from __future__ import annotations

import contextlib
import copy

import torch

from alignkit.train.lora import is_peft


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref.eval()


@contextlib.contextmanager
def reference_weights(model):
    """Inside, ``model`` computes as the reference: adapter disabled for PEFT, eval + no grad always."""
    was_training = model.training
    adapter_off = model.disable_adapter() if is_peft(model) else contextlib.nullcontext()
    model.eval()
    try:
        with adapter_off, torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def resolve_mode(mode: str, model) -> str:
    if mode == "auto":
        return "precompute"
    if mode == "adapter" and not is_peft(model):
        raise ValueError("reference='adapter' needs a LoRA run (--lora-r); use 'copy' or 'precompute'")
    return mode
