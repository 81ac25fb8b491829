"""A linear projection x·Wᵀ (+ b) with W stored in the layout this CPU multiplies fastest.

At decode shapes (a few dozen rows against a weight matrix that does not fit in cache) oneDNN
with the weight prepacked into its blocked layout runs up to several times faster than
``F.linear`` on the row-major weight. But a packed layout is chosen for one row count: called with
another, oneDNN re-packs the whole weight on every call (seen in fp32: 70× slower). So a packed
projection always multiplies blocks of exactly ``rows`` rows, padding the last block with zeros,
and the engine re-packs (``repack``) when its batch size changes. ``prefers_packed`` measures
whether packing pays on the machine at hand.
"""

from __future__ import annotations

import functools
import time

import torch
import torch.nn.functional as F


def _pack(weight: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight, rows)


class Projection:
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, *, packed: bool = False, rows: int = 16):
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.bias = bias
        self.packed = packed
        self.rows = rows
        self.weight = _pack(weight, rows) if packed else weight

    def repack(self, rows: int) -> None:
        """Re-pack for blocks of ``rows`` rows (a no-op for a plain weight or an unchanged count)."""
        if self.packed and rows != self.rows:
            self.weight, self.rows = _pack(self.weight.to_dense(), rows), rows

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (…, in) → (…, out)."""
        if not self.packed:
            return F.linear(x, self.weight, self.bias)
        return self._blocks(x, None)

    def add_to(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """residual + x·Wᵀ (+ b), the add fused into the matmul."""
        if self.packed:
            return self._blocks(x, residual)
        if x.dim() == 2 and self.bias is None:
            return torch.addmm(residual, x, self.weight.t())
        return residual + F.linear(x, self.weight, self.bias)

    def _blocks(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """The packed product over blocks of exactly ``rows`` rows (zero-padded), shapes as given."""
        flat = x.reshape(-1, self.in_features)
        extra = residual.reshape(-1, self.out_features) if residual is not None else None
        n = flat.shape[0]
        pad = -n % self.rows
        if pad:
            flat = torch.cat([flat, flat.new_zeros(pad, self.in_features)])
            extra = torch.cat([extra, extra.new_zeros(pad, self.out_features)]) if extra is not None else None
        outs = []
        for start in range(0, flat.shape[0], self.rows):
            block = flat[start : start + self.rows]
            if extra is None:
                outs.append(torch.ops.mkldnn._linear_pointwise(block, self.weight, self.bias, "none", [], ""))
            else:
                outs.append(torch.ops.mkldnn._linear_pointwise.binary(block, extra[start : start + self.rows], self.weight, self.bias, "add"))
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out[:n].reshape(*x.shape[:-1], self.out_features)


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
    """True when oneDNN prepacked weights beat ``F.linear`` by ≥ 10 % on decode-shaped products
    (4, 16 and 64 rows, each packed for its row count, against eight (4H × H) weights, more than a
    cache holds) on this CPU. Every row count must win."""
    if not torch.backends.mkldnn.is_available():
        return False
    weights = [torch.randn(4 * hidden_size, hidden_size, dtype=dtype) for _ in range(8)]
    plain = [Projection(w) for w in weights]
    try:
        packed = [Projection(w, packed=True) for w in weights]
        probe = torch.randn(16, hidden_size, dtype=dtype)
        if not torch.allclose(packed[0](probe).float(), plain[0](probe).float(), rtol=2e-2, atol=2e-2):
            return False
    except (RuntimeError, AttributeError):  # a torch build without these oneDNN ops
        return False
    for rows in (4, 16, 64):
        x = torch.randn(rows, hidden_size, dtype=dtype)
        for p in packed:
            p.repack(rows)
        if _seconds(lambda: [p(x) for p in plain]) < 1.1 * _seconds(lambda: [p(x) for p in packed]):
            return False
    return True
