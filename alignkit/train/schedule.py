"""The learning-rate schedule: linear warm-up, then linear, cosine or no decay.

For step s of S with W warm-up steps, the learning rate is ``lr × m(s)`` with

    m(s) = s / W                                  while s < W
    m(s) = max(0, (S − s) / (S − W))              linear
    m(s) = max(0, ½ (1 + cos(π (s − W) / (S − W))))  cosine
    m(s) = 1                                      constant

the same curves as transformers' ``get_scheduler`` (linear and cosine are tested against it),
without importing its optimisation module, which costs seconds at start-up.
"""

from __future__ import annotations

import functools
import math

import torch


def lr_multiplier(step: int, *, shape: str, warmup: int, total: int) -> float:
    """m(step): the factor on the peak learning rate (formulas above)."""
    if step < warmup:
        return step / max(1, warmup)
    if shape == "constant":
        return 1.0
    if shape == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    if shape == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))
    raise ValueError(f"unknown lr_schedule {shape!r}; choose linear, cosine or constant")


def build_scheduler(optimizer: torch.optim.Optimizer, shape: str, *, warmup: int, total: int):
    """A LambdaLR following ``lr_multiplier``; its state (the step) goes into checkpoints."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(lr_multiplier, shape=shape, warmup=warmup, total=total))
