"""PNG figures for the report: training curves from metrics rows, the β-ablation frontier, the reward-KL frontier.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), never
through pyplot, so no global backend is switched and nothing needs a display.
"""

from __future__ import annotations

import io
import math
import re

# Panel title -> metric names it shows (each also matched with an "eval/" prefix).
CURVE_PANELS: dict[str, tuple[str, ...]] = {
    "loss": ("loss",),
    "rewards": ("rewards/chosen", "rewards/rejected", "rewards/margins"),
    "reward accuracy": ("rewards/accuracies",),
}
_KL_NAME = re.compile(r"(^|[/_])kl([/_]|$)", re.IGNORECASE)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def metric_series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of ``key`` over the rows that have both a step and a finite value for it."""
    points = [(row["step"], row[key]) for row in rows if _is_number(row.get("step")) and _is_number(row.get(key))]
    return [s for s, _ in points], [v for _, v in points]


def panel_keys(rows: list[dict]) -> dict[str, list[str]]:
    """Panel title -> metric names present in ``rows`` (train then eval); panels with none are left out."""
    present = {k for row in rows for k in row if k != "step"}
    panels = {}
    for title, names in CURVE_PANELS.items():
        keys = [k for name in names for k in (name, f"eval/{name}") if k in present]
        if keys:
            panels[title] = keys
    kl_keys = sorted(k for k in present if _KL_NAME.search(k))
    if kl_keys:
        panels["KL"] = kl_keys
    return panels


def _png(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def curve_png(title: str, rows: list[dict], keys: list[str]) -> bytes:
    """One panel: each key's values against step."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3.2))
    axes = figure.add_subplot()
    for key in keys:
        steps, values = metric_series(rows, key)
        axes.plot(steps, values, marker="." if len(steps) < 30 else None, label=key)
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _png(figure)


def training_curve_pngs(rows: list[dict]) -> dict[str, bytes]:
    """Panel title -> PNG bytes for every panel with data."""
    return {title: curve_png(title, rows, keys) for title, keys in panel_keys(rows).items()}


def ablation_png(ablation: list[dict]) -> bytes | None:
    """Win rate against KL, one point per ablation row labelled with its β; None without both."""
    from matplotlib.figure import Figure

    points = sorted((r for r in ablation if _is_number(r.get("kl")) and _is_number(r.get("win_rate"))), key=lambda r: r["kl"])
    if not points:
        return None
    figure = Figure(figsize=(5, 3.2))
    axes = figure.add_subplot()
    axes.plot([r["kl"] for r in points], [r["win_rate"] for r in points], marker="o")
    for r in points:
        if "beta" in r:
            axes.annotate(f"β={r['beta']}", (r["kl"], r["win_rate"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xlabel("KL(policy ‖ reference)")
    axes.set_ylabel("win rate over base")
    axes.set_title("β ablation: win rate against KL")
    axes.grid(alpha=0.3)
    return _png(figure)


def frontier_png(points: list[dict], *, reward: str = "reward") -> bytes:
    """Mean reward against mean sequence KL(π‖π_ref), one series per ``method`` (sorted by KL),
    each point labelled with its β or target KL when it has one (the DPO paper's Fig. 2, left)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for method in dict.fromkeys(p["method"] for p in points):
        series = sorted((p for p in points if p["method"] == method and _is_number(p.get("kl")) and _is_number(p.get("reward"))),
                        key=lambda p: p["kl"])
        curve = "training curve" in method
        axes.plot([p["kl"] for p in series], [p["reward"] for p in series], marker="." if curve else "o",
                  linestyle=":" if curve else "-" if len(series) > 1 else "none", label=method)
        for p in series:
            label = f"β={p['beta']}" if p.get("beta") is not None else f"KL*={p['target_kl']}" if p.get("target_kl") and not curve else None
            if label:
                axes.annotate(label, (p["kl"], p["reward"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.set_xlabel("KL(π ‖ π_ref) per sequence (nats)")
    axes.set_ylabel(f"mean {reward}")
    axes.set_title("reward-KL frontier")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    return _png(figure)
