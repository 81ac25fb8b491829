"""Per-stage peak memory: the high-water mark rises with an allocation and resets between stages."""

import sys

import pytest
import torch

from alignkit.memory import peak_rss_gb, release_freed_memory, reset_peak_rss


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux's")
def test_peak_follows_an_allocation_and_resets():
    assert reset_peak_rss()
    before = peak_rss_gb()
    block = torch.ones(64 << 20)  # 256 MiB, touched
    del block
    release_freed_memory()
    assert peak_rss_gb() > before + 0.2  # the peak remembers the freed block
    assert reset_peak_rss()
    assert peak_rss_gb() < before + 0.15  # a new stage starts from what is resident now
