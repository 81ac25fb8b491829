"""Peak resident memory of this process, per stage: what a user's machine must have free.

Linux keeps the high-water mark of resident memory (``VmHWM`` in /proc/self/status) and resets
it when "5" is written to /proc/self/clear_refs, so each stage of a pipeline can report its own
peak. Elsewhere ``getrusage``'s ``ru_maxrss`` gives the peak since the process started.
"""

from __future__ import annotations

import ctypes
import resource
import sys
from pathlib import Path

GIB = 1 << 30


def peak_rss_gb() -> float:
    """The peak resident set size (GiB) since the process started or the last ``reset_peak_rss``."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GIB
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / GIB


def reset_peak_rss() -> bool:
    """Start a new peak measurement (Linux); returns whether the peak was reset."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def release_freed_memory() -> bool:
    """Give memory that is free inside the heap back to the OS (glibc's ``malloc_trim``).

    Between pipeline stages the previous stage's tensors are gone, but glibc keeps the pages
    (all the more under ``train/allocator.py``'s setting); the next stage would add its own peak
    on top of them."""
    try:
        return bool(ctypes.CDLL(None).malloc_trim(0))
    except (OSError, AttributeError):
        return False
