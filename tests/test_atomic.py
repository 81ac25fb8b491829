"""Checkpoints on disk: fsync'd before and after the rename, a replaced directory never missing,
stale temporary directories cleaned on the next start, and a full disk mid-save harmless."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import alignkit.atomic as atomic
from alignkit.atomic import atomic_directory, clean_stale
from alignkit.train.checkpoint import list_checkpoints, load_checkpoint
from alignkit.train.loop import build_optimizer, fit
from tests.test_loop import _cfg, _toy

ROOT = Path(__file__).resolve().parent.parent


def write(directory: Path, version: str) -> None:
    (directory / "weights").write_text(version * 100)
    (directory / "sub").mkdir()
    (directory / "sub" / "state").write_text(version)


def version_at(target: Path) -> str | None:
    """The complete copy at ``target``, or None when there is none."""
    try:
        return (target / "weights").read_text()[0] if (target / "sub" / "state").read_text() else None
    except FileNotFoundError:
        return None


def test_files_and_directories_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(a, b):
        events.append(("rename", str(b)))
        real_rename(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        write(tmp, "a")
    assert version_at(target) == "a"
    names = [Path(p).name for kind, p in events if kind == "fsync"]
    first_rename = next(i for i, (kind, _) in enumerate(events) if kind == "rename")
    synced_before = {Path(p).name for kind, p in events[:first_rename] if kind == "fsync"}
    assert {"weights", "state", "sub"} <= synced_before  # every file and subdirectory
    assert any(n.startswith(".ckpt.tmp-") for n in synced_before)  # the directory itself
    assert events[-1] == ("fsync", str(tmp_path)) and names.count(tmp_path.name) >= 1  # the rename, on disk


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "rename-aside"])
def test_replacing_never_leaves_a_moment_with_neither_copy(tmp_path, monkeypatch, exchange):
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        write(tmp, "a")
    if not exchange:
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    seen = []

    def complete_copy_exists():
        backups = [p / "x" for p in tmp_path.glob(".model.old-*")]
        copies = [v for v in [version_at(target), *map(version_at, backups)] if v]
        seen.append(copies)
        assert copies, "neither the old nor the new directory is complete"

    real_rename, real_rmtree = os.rename, atomic.shutil.rmtree
    monkeypatch.setattr(os, "rename", lambda a, b: (real_rename(a, b), complete_copy_exists()))
    monkeypatch.setattr(atomic.shutil, "rmtree", lambda p, **k: (real_rmtree(p, **k), complete_copy_exists()))
    with atomic_directory(target) as tmp:
        write(tmp, "b")
    assert version_at(target) == "b" and seen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing left beside it


def test_a_kill_between_the_two_renames_is_repaired_on_the_next_start(tmp_path, monkeypatch):
    target = tmp_path / "step-4"
    with atomic_directory(target) as tmp:
        write(tmp, "a")
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    real_rename = os.rename

    def killed_on_second_rename(a, b):
        if ".old-" not in str(b):
            raise KeyboardInterrupt("kill -9")  # the old copy is aside, the new one not yet in place
        real_rename(a, b)

    monkeypatch.setattr(os, "rename", killed_on_second_rename)
    monkeypatch.setattr(atomic.shutil, "rmtree", lambda *a, **k: None)  # a killed process cleans nothing
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(target) as tmp:
            write(tmp, "b")
    monkeypatch.undo()
    assert version_at(target) is None  # the name is empty for now...
    done = clean_stale(tmp_path)
    assert version_at(target) == "a"  # ...and the previous copy is back under it
    assert any("restored" in line for line in done) and sorted(p.name for p in tmp_path.iterdir()) == ["step-4"]


def test_stale_temporary_directories_are_cleaned_when_a_run_starts(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / ".step-3.tmp-abc123").mkdir(parents=True)
    (checkpoints / ".step-3.tmp-abc123" / "trainable.safetensors").write_bytes(b"half")
    (tmp_path / ".model.tmp-xyz").mkdir()
    (checkpoints / "notes.txt").write_text("kept")
    for step in (1, 2, 3):  # one too many, as a kill between a save's rename and its pruning leaves
        (checkpoints / f"step-{step}").mkdir()
        (checkpoints / f"step-{step}" / "trainer_state.json").write_text('{"step": %d}' % step)
    fit(_toy(), _cfg(tmp_path, max_steps=1, keep_checkpoints=2))
    assert sorted(p.name for p in checkpoints.iterdir()) == ["notes.txt", "step-2", "step-3"]
    assert not list(tmp_path.glob(".*tmp-*"))


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
import alignkit.train.loop as loop
from alignkit.train.checkpoint import CheckpointError, save_checkpoint
from tests.test_loop import _cfg, _toy

# The second save runs into a file-size limit: the kernel refuses the writes mid-file (EFBIG),
# as it would on a full disk (ENOSPC).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
calls = []
def save(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    return save_checkpoint(*args, **kwargs)
loop.save_checkpoint = save
try:
    loop.fit(_toy(), _cfg(Path(sys.argv[1]), max_steps=3, save_every=1))
except CheckpointError as exc:
    print(exc)
    sys.exit(7)
"""


def test_a_full_disk_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 7, proc.stderr[-3000:]
    assert "could not write checkpoint" in proc.stdout and "step-2" in proc.stdout
    assert "File too large" in proc.stdout and "step-1) is intact" in proc.stdout
    checkpoints = tmp_path / "checkpoints"
    assert [p.name for p in list_checkpoints(checkpoints)] == ["step-1"]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-1"]  # the half-written one is gone
    method = _toy(seed=7)
    optimizer, scheduler = build_optimizer([p for p in method.model.parameters()], _cfg(tmp_path), 3)
    assert load_checkpoint(checkpoints / "step-1", method.model, optimizer, scheduler) == 1
    assert all(torch.isfinite(p).all() for p in method.model.parameters())
