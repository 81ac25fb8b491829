"""Directories that appear whole or not at all, and survive a power cut once they have appeared.

A directory is written under a temporary name beside its target, every file and the directory
itself are fsync'd, and only then is it renamed into place (and the parent fsync'd, so the
rename itself is on disk). Replacing an existing directory swaps the two atomically
(``renameat2(RENAME_EXCHANGE)`` on Linux); where the kernel or file system cannot, the old one is
first renamed aside to a backup name, so at every moment one complete copy exists under one of
the two names, and :func:`clean_stale` puts a backup whose target is missing back in place.

Names (all dot-files, never listed as checkpoints): ``.<name>.tmp-XXXX`` is being written,
``.<name>.old-XXXX`` is a replaced copy about to be deleted, ``.<name>.del-XXXX`` a directory
being removed (renamed first, so a half-deleted one never passes for a complete one).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

STALE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old|del)-[^.]+$")
RENAME_EXCHANGE = 2  # linux/fs.h
AT_FDCWD = -100


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike):
    """Yield a temporary directory beside ``target``; on success it replaces ``target``.

    A kill, an exception or a full disk mid-write leaves the previous ``target`` (if any)
    untouched and no half-written directory under its name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        replace_directory(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_directory(new: Path, target: Path) -> None:
    """Put the complete directory ``new`` at ``target``; whatever was there is removed after."""
    if not target.exists():
        os.rename(new, target)
    elif _exchange(new, target):
        shutil.rmtree(new)  # `new` now holds the old copy
    else:
        backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rename(target, backup / "x")  # a rename into a fresh directory: never over anything
        os.rename(new, target)
        fsync_dir(target.parent)
        shutil.rmtree(backup)
    fsync_dir(target.parent)


def remove_directory(path: Path) -> None:
    """Delete ``path``: renamed aside in one step, then deleted (a kill in between leaves only a
    ``.del-`` directory, which :func:`clean_stale` removes)."""
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.del-", dir=path.parent))
    os.rename(path, aside / "x")
    fsync_dir(path.parent)
    shutil.rmtree(aside)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the kernel or file system cannot (then nothing moved)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def fsync_tree(root: Path) -> None:
    """fsync every file under ``root``, then every directory bottom-up (entries before their parent)."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(directory))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_stale(parent: str | os.PathLike) -> list[str]:
    """Remove what a killed writer left in ``parent``; return what was done, one line each.

    A temporary directory is deleted (its target, if any, is the complete previous copy). A
    backup whose target exists is deleted; one whose target is missing (killed between the two
    renames of the fallback path) is moved back: it is the last complete copy.
    """
    parent = Path(parent)
    done = []
    if not parent.is_dir():
        return done
    for path in sorted(parent.iterdir()):
        match = STALE.match(path.name)
        if not match or not path.is_dir():
            continue
        target = parent / match["name"]
        inner = path / "x"
        if match["kind"] == "old" and inner.is_dir() and not target.exists():
            os.rename(inner, target)
            done.append(f"restored {target} from {path.name}")
        else:
            done.append(f"removed {path.name}")
        shutil.rmtree(path, ignore_errors=True)
    if done:
        fsync_dir(parent)
        log.info("%s: %s", parent, "; ".join(done))
    return done
