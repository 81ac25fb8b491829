"""Metrics out: a JSONL file always, plus TensorBoard / trackio / MLflow / W&B when chosen."""

from __future__ import annotations

import json
import time
from pathlib import Path


class MetricsLogger:
    """Appends one JSON object per log call to ``metrics.jsonl``; forwards to accelerate trackers."""

    def __init__(self, output_dir: Path, *, report_to: list[str] = (), config: dict | None = None, enabled=True):
        self.enabled = enabled
        self.path = output_dir / "metrics.jsonl"
        self.start = time.time()
        self._accelerator = None
        if enabled and report_to:
            from accelerate import Accelerator

            # TensorBoard event files land in <output_dir>/trackers/<run name>/.
            self._accelerator = Accelerator(log_with=list(report_to), project_dir=str(output_dir / "trackers"))
            self._accelerator.init_trackers(output_dir.name, config=_flat(config or {}))

    def log(self, metrics: dict, *, step: int) -> None:
        if not self.enabled:
            return
        row = {"step": step, "elapsed_s": round(time.time() - self.start, 3), **metrics}
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self._accelerator is not None:
            self._accelerator.log(metrics, step=step)

    def close(self) -> None:
        if self._accelerator is not None:
            self._accelerator.end_training()


def _flat(config: dict) -> dict:
    # Trackers accept scalars only: lists and None become strings.
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()}


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.jsonl file (for reports and tests)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
