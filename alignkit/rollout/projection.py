"""A linear projection x·Wᵀ (+ b) with W stored in the layout this CPU multiplies fastest.

At decode shapes (a few dozen rows against a weight matrix that does not fit in cache) oneDNN
with the weight prepacked into its blocked layout runs up to several times faster than
``F.linear`` on the row-major weight. But a packed layout is chosen for one row count: called with
another, oneDNN re-packs the whole weight on every call (seen in fp32: 70× slower). So a packed
projection always multiplies blocks of exactly ``rows`` rows, padding the last block with zeros,
and the engine re-packs (``repack``) when its batch size changes. Whether packing pays on the
machine at hand is measured (``precision.prefers_packed``).
"""

from __future__ import annotations

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
