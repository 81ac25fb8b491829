"""Freed host memory is reused instead of being mapped and zeroed again by the kernel."""

import platform
import subprocess
import sys

import pytest

CHECK = """
import resource, sys, torch
from alignkit.train.allocator import return_freed_memory, reuse_freed_memory
if sys.argv[1] in ("on", "restored"):
    assert reuse_freed_memory()
if sys.argv[1] == "restored":  # training over: glibc's defaults again
    assert return_freed_memory()
for _ in range(4):  # several steps' worth of the same 256 MB temporary, as a training loop makes
    torch.ones(64 << 20).sum()
faults = []
for _ in range(5):  # the median step: now and then the kept memory passes 1 GiB and is trimmed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(64 << 20).sum()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
faults = sorted(faults)[2]
resident_mb = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20
after_9 = resident_mb()
for _ in range(16):
    torch.ones(64 << 20).sum()
print(faults, after_9, resident_mb())
"""


def _run(mode: str, env: dict | None = None) -> tuple[int, list[int]]:
    """(page faults of a 256 MB temporary, the median of 5 steps; resident MB after 9 and after 25 of them)."""
    out = subprocess.run([sys.executable, "-c", CHECK, mode], capture_output=True, text=True, check=True, env=env).stdout
    faults, *resident_mb = map(int, out.split())
    return faults, resident_mb


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_repeated_large_tensor_reuses_freed_pages():
    faults, resident_mb = {}, {}
    for mode in ("off", "on", "restored"):
        faults[mode], resident_mb[mode] = _run(mode)
    assert faults["off"] > 10_000  # glibc's default: a fresh mmap, every 4 KiB page faulted in again
    assert faults["on"] < faults["off"] / 20
    # The price is freed memory kept for reuse: a few 256 MB blocks, not one per step. Which holes
    # get reused varies from run to run (after 9 steps 734 to 2,014 MB here; once in CI 1,057 MB,
    # then 768 MB more by step 25; once here a step faulted every page in), so the bound is a
    # quarter of the 16 blocks a leak would add.
    after_9, after_25 = resident_mb["on"]
    assert after_25 - after_9 < 16 * 256 / 4
    # After training, glibc's defaults are back: big blocks are unmapped on free, nothing kept.
    assert faults["restored"] > 10_000
    assert resident_mb["restored"][1] < resident_mb["on"][1] - 200


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
@pytest.mark.xfail(strict=False, reason="glibc's MALLOC_* variables did not take effect in 2 of 12 to "
                   "2 of 3 runs on the 2026-11-25 machine (with or without ASLR); cause not found. mallopt, "
                   "what alignkit itself calls, held in 12 of 12.")
def test_glibc_env_variables_give_the_same_setting():
    """No mallopt call, the same settings through glibc's MALLOC_* variables: how the benchmark gives
    TRL the allocator alignkit sets for itself."""
    import os

    from alignkit.train.allocator import glibc_env

    off, _ = _run("off")
    env, _ = _run("env", {**os.environ, **glibc_env()})
    assert env < off / 20


MID_SIZE = """
import resource, sys, torch
from alignkit.train.allocator import return_freed_memory, reuse_freed_memory
if sys.argv[1] == "restored":
    assert reuse_freed_memory() and return_freed_memory()
for _ in range(4):
    torch.ones(2 << 20).sum()  # an 8 MiB temporary, as a reward model's or a sampler's step makes
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(16):
    torch.ones(2 << 20).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_restored_allocator_reuses_mid_size_blocks_as_glibc_does():
    """After training, an 8 MiB temporary is served from the heap again, as glibc's own dynamic
    threshold does, not mapped and zeroed afresh each time (16 x 2,048 page faults; a heap that
    grows once in the loop costs 2,048, as it sometimes does under glibc's own defaults)."""
    faults = {mode: int(subprocess.run([sys.executable, "-c", MID_SIZE, mode], capture_output=True, text=True,
                                       check=True).stdout) for mode in ("default", "restored")}
    assert faults["default"] < 8_192
    assert faults["restored"] < 8_192


PREPARED = """
import resource, sys, torch
from alignkit.models import save_tiny_model
from alignkit.train.config import RunConfig
from alignkit.train.setup import prepare_model
prepare_model(RunConfig(model=save_tiny_model(sys.argv[2] + "/tiny"), keep_freed_memory=sys.argv[1] == "keep"))
for _ in range(4):
    torch.ones(64 << 20).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(64 << 20).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_decides_whether_training_keeps_freed_pages(tmp_path):
    """``keep_freed_memory`` (on by default) is what turns the slack on for a CPU training run."""
    faults = {mode: int(subprocess.run([sys.executable, "-c", PREPARED, mode, str(tmp_path / mode)], capture_output=True,
                                       text=True, check=True).stdout.split()[-1]) for mode in ("keep", "return")}
    assert faults["keep"] < 1_000
    assert faults["return"] > 10_000  # a fresh mmap of 256 MB, every page faulted in again
