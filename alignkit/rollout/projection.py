"""A linear projection x·Wᵀ (+ b) with W stored in the layout this CPU multiplies fastest.

At decode shapes (a few dozen rows against a weight matrix that does not fit in cache) oneDNN
with a weight prepacked into its blocked layout runs several times faster than ``F.linear`` on
the plain row-major weight, in bf16 and fp32 alike (measured: ``bench/rollout.py``). Prepacking is
done once per ``load_weights``; ``prefers_packed`` measures whether it pays on the machine at hand.
"""

from __future__ import annotations

import functools
import time

import torch
import torch.nn.functional as F


class Projection:
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, *, packed: bool = False, batch_hint: int = 16):
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.bias = bias
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, batch_hint) if packed else weight
        self.packed = packed

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (…, in) → (…, out)."""
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)

    def add_to(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """residual + x·Wᵀ (+ b), the add fused into the matmul."""
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.weight, self.bias, "add")
        if x.dim() == 2 and self.bias is None:
            return torch.addmm(residual, x, self.weight.t())
        return residual + F.linear(x, self.weight, self.bias)


def _seconds(fn, repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@functools.lru_cache(maxsize=None)
def prefers_packed(dtype: torch.dtype, hidden_size: int) -> bool:
    """True when oneDNN prepacked weights beat ``F.linear`` by ≥ 10 % on a decode-shaped product
    (16 rows against eight (4H × H) weights, more than a cache holds) on this CPU."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        x = torch.randn(16, hidden_size, dtype=dtype)
        weights = [torch.randn(4 * hidden_size, hidden_size, dtype=dtype) for _ in range(8)]
        plain = [Projection(w) for w in weights]
        packed = [Projection(w, packed=True) for w in weights]
        if not torch.allclose(packed[0](x).float(), plain[0](x).float(), rtol=2e-2, atol=2e-2):
            return False
    except (RuntimeError, AttributeError):  # a torch build without these oneDNN ops
        return False
    return _seconds(lambda: [p(x) for p in plain]) >= 1.1 * _seconds(lambda: [p(x) for p in packed])
