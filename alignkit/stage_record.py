"""Which stages of a recipe finished, so that ``alignkit run`` started again goes on where it stopped.

Each stage keeps ``<output_dir>/<stage>/stage.json``: ``{"fingerprint": F, "status": "running"}``
from the moment it starts, replaced by ``{"fingerprint": F, "status": "done", "result": {...}}``
once its outputs are written and fsync'd. Each write is atomic (a temporary file, fsync'd, renamed
over the old one), so a kill leaves the old record or the new one, never half of one. Next run:

- ``done`` with the same fingerprint: the stage is skipped and its recorded result reused;
- ``running`` with the same fingerprint (killed or failed midway with these very settings): the
  stage runs again, a training stage from its newest checkpoint (written every ``save_every``);
- anything else, or ``--fresh``: the stage runs from scratch, its old checkpoints deleted first.

The ``running`` record is what makes a checkpoint safe to resume: the training loop's own
fingerprint (train/fingerprint.py) sees an upstream model only by its path, and
``runs/x/sft/model`` names other weights once the sft stage has been retrained.

The fingerprint covers what can change a stage's outcome: its resolved fields, the recipe's
top-level settings (model, data, defaults, ...), the size and modification time of every local
file and directory those name, and the previous stage's fingerprint. That chain makes a changed
stage rerun every stage after it: the simplest rule that is right without knowing which later
stage reads what (a report reads every earlier eval; a frontier, the curves of the stages it names).
Not covered: alignkit's own code, the weights behind a hub id, a model served at an endpoint URL.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from alignkit.atomic import fsync_dir, fsync_tree, remove_directory

RECORD = "stage.json"


def stage_fingerprint(recipe: dict, method: str, fields: dict, previous: str) -> str:
    """sha256 of a stage's settings, of the local files they name, and of the stage before (``previous``)."""
    # Not the recipe's file (it may move) nor output_dir (where the records are: walking it would
    # see every stage's outputs change); the stages before come in through ``previous``.
    settings = {k: v for k, v in recipe.items() if k not in ("stages", "_file", "output_dir")}
    facts = {"method": method, "fields": fields, "recipe": settings, "previous": previous,
             "files": {str(path): _stat(path) for path in sorted(set(_local_paths([fields, settings])))}}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def _local_paths(value):
    """Every string inside ``value`` (nested dicts and lists) that names an existing file or directory."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            yield from _local_paths(item)
    elif isinstance(value, str) and value:  # "" would be the working directory
        try:
            if Path(value).exists():
                yield Path(value)
        except OSError:  # a prompt or a long text, not a path
            pass


def _stat(path: Path) -> list:
    """(name, size, mtime) of ``path`` or of each file under it: an edited data file or a retrained
    model changes it; reading them (GBs of weights) would cost more than the check is worth."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [(str(p.relative_to(path)) if p != path else "", p.stat().st_size, p.stat().st_mtime_ns) for p in files]


def read_record(stage_dir: Path) -> dict | None:
    try:
        return json.loads((stage_dir / RECORD).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def mark_running(stage_dir: Path, fingerprint: str) -> None:
    _write(stage_dir, {"fingerprint": fingerprint, "status": "running"})


def mark_done(stage_dir: Path, fingerprint: str, result: dict) -> None:
    """Record the stage as finished, after everything it wrote under ``stage_dir`` is on disk."""
    fsync_tree(stage_dir)
    _write(stage_dir, {"fingerprint": fingerprint, "status": "done", "result": result})


def drop_checkpoints(stage_dir: Path) -> None:
    """A stage that starts over must never later resume checkpoints of its earlier settings."""
    if (stage_dir / "checkpoints").is_dir():
        remove_directory(stage_dir / "checkpoints")


def _write(stage_dir: Path, record: dict) -> None:
    stage_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=stage_dir, prefix=f".{RECORD}.tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, stage_dir / RECORD)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(stage_dir)
