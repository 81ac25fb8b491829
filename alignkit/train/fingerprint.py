"""What a run was started with, so that resuming it with something else is refused.

A resumed run reproduces the uninterrupted one only if it continues with the same settings and
the same data. Each checkpoint stores this fingerprint; ``fit(resume=True)`` compares it with the
current one and names every difference instead of silently training a hybrid.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from alignkit.train.config import RunConfig

# Fields that change how a run is watched or laid out, not what it computes: free to differ on
# resume. A checkpoint holds full tensors whether or not the run was sharded (fsdp), so an FSDP
# run resumes on one process and the other way round, like a change in the number of processes.
MAY_CHANGE_ON_RESUME = frozenset({"resume", "output_dir", "threads", "report_to", "log_every", "save_every",
                                  "keep_checkpoints", "eval_every", "fsdp"})


class ResumeMismatchError(ValueError):
    """The checkpoint was written by a run with other settings or other data."""


def run_fingerprint(cfg: RunConfig, n_train_items: int | None) -> dict:
    """The settings that shape the computation, and a digest of every data file they name."""
    settings = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in MAY_CHANGE_ON_RESUME}
    data = {spec: file_digests(spec) for spec in (cfg.data, cfg.eval_data) if spec}
    return {"config": settings, "data": data, "n_train_items": n_train_items}


def file_digests(spec: str) -> dict[str, str]:
    """sha256 of each file ``spec`` names (a path or a bundled set); empty for a hub id."""
    from alignkit.train.setup import data_files

    digests = {}
    for name in data_files(spec):
        path = Path(name)
        if path.is_file():
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            digests[name] = digest.hexdigest()
    return digests


def check_resume(saved: dict | None, current: dict, checkpoint: Path) -> None:
    """Raise :class:`ResumeMismatchError` naming each difference between ``saved`` and ``current``."""
    if saved is None:
        return  # written before fingerprints existed: nothing to compare with
    problems = []
    old, new = saved.get("config", {}), current["config"]
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            problems.append(f"config field '{key}' was {old.get(key)!r}, now {new.get(key)!r}")
    old_data, new_data = saved.get("data", {}), current["data"]
    for spec in sorted(set(old_data) | set(new_data)):
        for name in sorted(set(old_data.get(spec, {})) | set(new_data.get(spec, {}))):
            before, after = old_data.get(spec, {}).get(name), new_data.get(spec, {}).get(name)
            if before != after:
                problems.append(f"data file {name} changed (sha256 {str(before)[:12]} -> {str(after)[:12]})")
    if saved.get("n_train_items") != current["n_train_items"]:
        problems.append(f"training examples were {saved.get('n_train_items')}, now {current['n_train_items']}")
    if problems:
        raise ResumeMismatchError(
            f"cannot resume from {checkpoint}: " + "; ".join(problems)
            + ". Resume with the original settings and data, or start a new output_dir."
        )
