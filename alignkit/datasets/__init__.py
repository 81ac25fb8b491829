"""Datasets that ship inside the package, addressable by name (``--data hhh``, ``--eval-data hhh:test``,
``--prompts arith``)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).parent
BUNDLED = {"hhh": ROOT / "hhh", "arith": ROOT / "arith", "constraints": ROOT / "constraints", "reviews": ROOT / "reviews",
           "arith-steps": ROOT / "arith_steps"}


def bundled_files(spec: str) -> list[Path] | None:
    """Files of a bundled dataset spec ``name[:split]`` (split defaults to train), or None if not one."""
    name, _, split = spec.partition(":")
    if name not in BUNDLED:
        return None
    files = sorted(BUNDLED[name].glob(f"*.{split or 'train'}.jsonl"))
    if not files:
        raise FileNotFoundError(f"bundled dataset {name!r} has no split {split or 'train'!r} in {BUNDLED[name]}")
    return files


def write_splits(directory: Path, name: str, splits: dict[str, list[dict]]) -> None:
    """Write a generated dataset as ``<directory>/<name>.<split>.jsonl``, one JSON row a line."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        (directory / f"{name}.{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
