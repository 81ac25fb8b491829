"""Which dtype and weight layout to decode with, chosen by measurement on the machine at hand,
never by assumption.

Decoding a small model is bound by reading the weights once per step; bf16 halves those bytes, and
CPUs with AVX512_BF16 or AMX also multiply bf16 faster. Elsewhere (AVX2-only CPUs) bf16 matmuls are
emulated and slower. So: time one decode-shaped matmul in both dtypes and keep the faster.
"""

from __future__ import annotations

import functools
import time

import torch
import torch.nn.functional as F

from alignkit.rollout.projection import Projection

BF16_MIN_SPEEDUP = 1.2
"""bf16 must beat fp32 by this factor to be chosen: its log-probs differ from an fp32 trainer's."""


def _seconds(fn, repeats: int = 5) -> float:
    fn()  # warm-up: kernel selection, first-touch allocation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@functools.lru_cache(maxsize=None)
def decode_dtype(device: torch.device, hidden_size: int) -> torch.dtype:
    """bf16 on CUDA with bf16 support; on CPU bf16 when a (16 × H)·(H × 4H) matmul measures
    ≥ ``BF16_MIN_SPEEDUP``× faster than in fp32, else fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type != "cpu":
        return torch.float32
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(16, hidden_size, dtype=dtype)
        weights = [torch.randn(4 * hidden_size, hidden_size, dtype=dtype) for _ in range(8)]  # > cache, as in a model
        timings[dtype] = _seconds(lambda: [F.linear(x, w) for w in weights])
    return torch.bfloat16 if timings[torch.float32] >= BF16_MIN_SPEEDUP * timings[torch.bfloat16] else torch.float32


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
