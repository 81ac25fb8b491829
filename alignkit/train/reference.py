"""Where reference log-probs come from: a frozen copy, the LoRA base, or a one-off precompute.

- ``copy``: a frozen deep copy of the starting model, run every step (TRL's default).
- ``adapter``: the same weights with the LoRA adapter switched off — one model in memory.
- ``precompute``: log-probs computed once before training (by the starting weights, or the
  base under the adapter) and cached with each example; nothing reference-shaped runs during
  training. ``auto`` picks it: for offline data the reference never changes, so computing it
  once is the least work.

Batches lay out their sequences in blocks (DPO: all chosen rows, then all rejected rows), so an
item caches one reference value per block and ``stack_cached`` rebuilds the batch layout.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable

import torch

from alignkit.train.lora import is_peft


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


class Reference:
    """Reference log-probs for a batch, by one of the modes above.

    ``score(model, batch) -> (N,)`` is the method's own scoring function, so the reference is
    computed exactly as the policy is.
    """

    def __init__(self, mode: str, model: torch.nn.Module, score: Callable):
        if mode == "auto":
            mode = "precompute"
        if mode == "adapter" and not is_peft(model):
            raise ValueError("reference='adapter' needs a LoRA run (--lora-r); use 'copy' or 'precompute'")
        self.mode, self.model, self.score = mode, model, score
        self.frozen = None
        if mode == "copy":
            self.frozen = copy.deepcopy(model).requires_grad_(False).eval()

    def logps(self, batch) -> torch.Tensor:
        if "ref_logps" in batch:
            return batch["ref_logps"]
        if self.frozen is not None:
            with torch.no_grad():
                return self.score(self.frozen, batch)
        with reference_weights(self.model) as ref:
            return self.score(ref, batch)

    def precompute(self, items: list, collate: Callable, *, batch_size: int = 8) -> None:
        """Score ``items`` once and cache one value per block on each item (``item.ref``)."""
        if self.mode != "precompute":
            return
        from tqdm.auto import tqdm

        for start in tqdm(range(0, len(items), batch_size), desc="reference log-probs", leave=False,
                          disable=len(items) <= batch_size):
            chunk = items[start : start + batch_size]
            values = self.logps(collate(chunk)).view(-1, len(chunk))  # (blocks, n)
            for i, item in enumerate(chunk):
                item.ref = tuple(values[:, i].tolist())


def stack_cached(items: list) -> torch.Tensor | None:
    """The cached reference values of ``items`` in batch layout (block by block), or None."""
    if not items or items[0].ref is None:
        return None
    blocks = len(items[0].ref)
    return torch.tensor([it.ref[b] for b in range(blocks) for it in items])
