"""Per-stage peak memory: the high-water mark rises with an allocation and resets between stages."""

import subprocess
import sys

import pytest

# In a fresh process: earlier tests may have switched the allocator to keep freed memory
# (train/allocator.py), and then a new block reuses resident pages instead of raising the peak.
CHECK = """
import torch
from alignkit.memory import peak_rss_gb, release_freed_memory, reset_peak_rss
assert reset_peak_rss()
before = peak_rss_gb()
block = torch.ones(64 << 20)  # 256 MiB, touched
del block
release_freed_memory()
raised = peak_rss_gb() - before  # the peak remembers the freed block
assert reset_peak_rss()
after_reset = peak_rss_gb() - before  # a new stage starts from what is resident now
print(raised, after_reset)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux's")
def test_peak_follows_an_allocation_and_resets():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True).stdout
    raised, after_reset = map(float, out.split())
    assert raised > 0.2
    assert after_reset < 0.15
