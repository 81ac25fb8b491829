"""Keep freed host memory in the process instead of returning it to the kernel on every free.

glibc serves each allocation above its mmap threshold (at most 32 MiB) with fresh pages from
``mmap`` and unmaps them on ``free``. A CPU training step allocates and frees several such
tensors (the [tokens × vocab] log-softmax and its gradient, the embedding and head gradients,
batched activations), so every step the kernel maps and zeroes hundreds of MB again: on the
2-core benchmark machine that was 0.4-0.5 s of system time per 5 s DPO step. Taking every block
from the heap and keeping up to 1 GiB of freed memory for reuse removes most of it: 24 full
fine-tune steps of SmolLM2-135M took 114 s instead of 123 s (system time 3.5 s instead of
10.4 s), while resident memory levelled off about 8 % higher (docs/performance.md). The cost
is that freed blocks stay with the process: a loop re-allocating one 256 MB tensor keeps a few
such blocks resident (0.7-2.0 GB in tests/test_allocator.py) where glibc's default keeps none.
Only CPU training turns it on (``prepare_model``), unless its ``keep_freed_memory`` is off.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>: free memory at the heap top returned to the OS above this
M_MMAP_THRESHOLD = -3  # glibc <malloc.h>: allocations at least this large are served by mmap
M_MMAP_MAX = -4  # glibc <malloc.h>: how many allocations may be served by mmap at once


KEEP_BYTES = 1 << 30  # freed memory kept for reuse before any is returned to the OS


def glibc_env(keep_bytes: int = KEEP_BYTES) -> dict[str, str]:
    """The same settings as environment variables (mallopt(3)), for a process alignkit does not
    run itself, e.g. a peer library in ``bench/dpo_vs_trl.py`` given an equal allocator."""
    return {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(keep_bytes)}


GLIBC_MMAP_MAX = 65536  # glibc's default (mallopt(3))
# Where glibc's dynamic thresholds end up (64-bit DEFAULT_MMAP_THRESHOLD_MAX, and twice that).
DYNAMIC_MMAP_THRESHOLD_MAX = 32 << 20
DYNAMIC_TRIM_THRESHOLD_MAX = 64 << 20


def return_freed_memory() -> bool:
    """Undo :func:`reuse_freed_memory`: blocks over 32 MiB from mmap again, and free memory at the
    heap top beyond 64 MiB returned to the OS, for work after training (evaluation) that should not
    inherit the slack.

    Not glibc's start-up values (128 KiB): setting any threshold turns off glibc's dynamic rule,
    which raises the mmap threshold to the largest block freed (up to 32 MiB) and the trim
    threshold to twice that. Fixed at 128 KiB, every tensor above it was mapped and zeroed afresh:
    the quickstart's judge took 4.9 s a step instead of 3.6 s after the pipeline "restored" them.
    So this sets where the dynamic rule ends up."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return all([mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX), mallopt(M_MMAP_THRESHOLD, DYNAMIC_MMAP_THRESHOLD_MAX),
                mallopt(M_TRIM_THRESHOLD, DYNAMIC_TRIM_THRESHOLD_MAX)])


def reuse_freed_memory(keep_bytes: int = KEEP_BYTES) -> bool:
    """Serve all allocations from the heap and return freed memory to the OS only beyond
    ``keep_bytes`` of slack. glibc only (a no-op elsewhere); returns whether it applied.
    The setting is process-wide and lasts for the process."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: macOS, Windows
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, keep_bytes))
