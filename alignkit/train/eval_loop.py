"""Held-out evaluation shared by the methods: the training loss and metrics, example-weighted."""

from __future__ import annotations


def mean_loss_metrics(method, items: list, batch_size: int = 8) -> dict[str, float]:
    """Average ``method.loss`` and its metrics over ``items`` (each example counts once)."""
    if not items:
        return {}
    if hasattr(method, "length"):
        items = sorted(items, key=method.length)  # similar lengths per batch: less padding, same averages
    totals: dict[str, float] = {}
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        loss, metrics = method.loss(method.collate(chunk))
        for k, v in {"loss": loss.item(), **metrics}.items():
            totals[k] = totals.get(k, 0.0) + v * len(chunk)
    return {k: v / len(items) for k, v in totals.items()}
