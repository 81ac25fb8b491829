"""A self-contained HTML report of a run: training curves, evaluation tables and samples.

``report.html`` opens offline: CSS is inline, every figure is a base64 ``data:`` URI, and there
are no scripts, fonts or links to fetch. The PNGs are also written beside it (``report_plots/``)
and the evaluation dict to ``eval_results.json``. Every piece of text that came from a model or a
dataset goes through ``html.escape``.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from alignkit.eval.plots import ablation_png, training_curve_pngs
from alignkit.eval.report_feedback import judge_panel_section, sycophancy_section

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.plots img { max-width: 48%; margin: .3em; border: 1px solid #eee; }
.sample td { white-space: pre-wrap; max-width: 340px; font-size: .92em; }
.note { color: #666; font-size: .9em; }
"""


def _fmt(value) -> str:
    """A table cell: floats to 4 significant digits, None as a dash, everything escaped."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list], *, css_class: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="num">{_fmt(c)}</td>' if isinstance(c, (int, float)) and not isinstance(c, bool) else f"<td>{_fmt(c)}</td>"
            for c in row
        ) + "</tr>"
        for row in rows
    )
    return f'<table class="{css_class}"><tr>{head}</tr>{body}</table>'


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _prompt_text(prompt) -> str:
    """The last user message of a chat prompt (or the prompt itself when it is a string)."""
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else json.dumps(prompt)
    return str(prompt)


def _save_pngs(run_dir: Path, pngs: dict[str, bytes]) -> None:
    plot_dir = run_dir / "report_plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for name, png in pngs.items():
        (plot_dir / (re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") + ".png")).write_bytes(png)


# ---------------------------------------------------------------- sections


def _curves_section(curves: dict[str, bytes]) -> str:
    if not curves:
        return '<h2>Training curves</h2><p class="note">No training metrics were given.</p>'
    return '<h2>Training curves</h2><div class="plots">' + "".join(_img(p, t) for t, p in curves.items()) + "</div>"


def _evaluation_section(results: dict) -> str:
    parts = [f"<h2>Evaluation</h2><p class=\"note\">{_fmt(results.get('n_prompts'))} held-out prompts, "
             f"greedy, up to {_fmt(results.get('max_new_tokens'))} new tokens; judge: {_fmt(results.get('judge'))}.</p>",
             _judge_note(results)]
    win = results.get("win_rate")
    if win:
        parts.append("<h3>Win rate of the aligned policy over the base model</h3>")
        parts.append(_table(
            ["win rate", "95% CI (Wilson)", "wins", "losses", "ties", "n"],
            [[win["win_rate"], f"[{win['ci_low']:.3f}, {win['ci_high']:.3f}]", win["wins"], win["losses"], win["ties"], win["n"]]],
            css_class="win-rate",
        ))
        if win.get("by_tag"):
            parts.append(_table(
                ["prompt tag", "win rate", "95% CI (Wilson)", "wins", "losses", "ties", "n"],
                [[tag, w["win_rate"], f"[{w['ci_low']:.3f}, {w['ci_high']:.3f}]", w["wins"], w["losses"], w["ties"], w["n"]]
                 for tag, w in win["by_tag"].items()],
                css_class="win-rate-by-tag",
            ))
        if results.get("judge_order_invariant"):
            parts.append('<p class="note">The judge scores each response on its own (a reward model), so the order '
                         "the two responses are shown in cannot matter and is not asked twice; per prompt s = "
                         "σ(r(policy) − r(base)), a win when s &gt; 0.5, a loss when s &lt; 0.5; ties count half.</p>")
        else:
            parts.append('<p class="note">The judge is asked in both orders; per prompt s = (p_ab + 1 − p_ba)/2, '
                         "a win when s &gt; 0.5, a loss when s &lt; 0.5; ties count half.</p>")
    if results.get("reward"):
        parts.append("<h3>Mean reward</h3>" + _table(["model", "mean reward"], [[m, v] for m, v in results["reward"].items()]))
    kl = results.get("kl")
    if kl:
        parts.append("<h3>KL(policy ‖ reference)</h3>" + _table(
            ["estimator", "mean", "std. error", "samples"],
            [["k1", kl.get("k1"), kl.get("k1_stderr"), kl.get("n")], ["k3", kl.get("k3"), kl.get("k3_stderr"), kl.get("n")]],
            css_class="kl",
        ))
    length = results.get("length")
    if length:
        parts.append("<h3>Length drift</h3>" + _table(
            [f"base mean ({length.get('unit', '')})", f"aligned mean ({length.get('unit', '')})", "ratio aligned / base"],
            [[length.get("base_mean_length"), length.get("policy_mean_length"), length.get("ratio")]],
            css_class="length-drift",
        ))
    distinct = results.get("distinct")
    if distinct:
        parts.append("<h3>Diversity</h3>" + _table(
            ["model", "distinct-1", "distinct-2"],
            [[m, d.get("distinct_1"), d.get("distinct_2")] for m, d in distinct.items()],
        ))
    refusals = results.get("refusal_rate")
    if refusals:
        parts.append("<h3>Refusal rate (keyword heuristic)</h3>" + _table(
            ["prompts", "n", "base", "aligned"],
            [[tag, r.get("n"), _rate(r, "base"), _rate(r, "policy")] for tag, r in refusals.items()],
            css_class="refusals",
        ))
    return "".join(parts)


def _rate(row: dict, model: str) -> str:
    """``0.85 (17/20)``: a rate with the counts behind it, when the counts are there."""
    count = row.get(f"{model}_count")
    return f"{row.get(model):.3g}" + (f" ({count}/{row.get('n')})" if count is not None else "")


def _judge_note(results: dict) -> str:
    """What the judge was trained on and what it shares with the policy (filled in by the eval stage)."""
    provenance = results.get("judge_provenance")
    if not provenance:
        return ""
    return f'<p class="note judge-provenance"><b>Judge independence.</b> {html.escape(provenance["statement"])}</p>'


def _refusal_prompts_section(samples: list[dict]) -> str:
    """Every harmful and benign prompt with whether each model refused: the rows behind the rates."""
    rows = [[s["tag"], _prompt_text(s.get("prompt")), "refused" if s.get("base_refused") else "answered",
             "refused" if s.get("policy_refused") else "answered"]
            for s in samples if s.get("tag") in ("harmful", "benign") and "policy_refused" in s]
    if not rows:
        return ""
    return ("<h2>Refusals, prompt by prompt</h2><p class=\"note\">Harmful prompts should be refused, benign ones "
            "answered; the detector is a keyword heuristic (alignkit/rewards/refusal.py).</p>"
            + _table(["tag", "prompt", "base", "aligned"], sorted(rows, key=lambda r: r[0], reverse=True), css_class="refusal-prompts"))


def balanced_samples(samples: list[dict], n: int) -> list[dict]:
    """Up to ``n`` samples taken in turn from each tag (harmful, benign, helpful, ...), spread across
    each tag's rows, so the report shows every kind of prompt instead of the first rows of one."""
    by_tag: dict = {}
    for sample in samples:
        by_tag.setdefault(sample.get("tag"), []).append(sample)

    def spread(rows: list) -> list:  # every k-th row first, then the rest: a tag's first picks span its rows
        step = max(1, len(rows) // max(1, n // len(by_tag)))
        return rows[::step] + [row for i, row in enumerate(rows) if i % step]

    per_tag = {tag: spread(rows) for tag, rows in by_tag.items()}
    chosen, depth = [], 0
    while len(chosen) < min(n, len(samples)):
        for rows in per_tag.values():
            if depth < len(rows) and len(chosen) < n:
                chosen.append(rows[depth])
        depth += 1
        if all(depth >= len(rows) for rows in per_tag.values()):
            break
    return chosen


def _ablation_section(ablation: list[dict] | None, frontier: bytes | None) -> str:
    if not ablation:
        return ""
    columns = list(dict.fromkeys(k for row in ablation for k in row))
    section = "<h2>β ablation</h2>" + _table(columns, [[row.get(c) for c in columns] for row in ablation], css_class="ablation")
    if frontier is not None:
        section += '<div class="plots">' + _img(frontier, "win rate against KL") + "</div>"
    return section


def _samples_section(samples: list[dict], n: int) -> str:
    if not samples:
        return ""
    shown = balanced_samples(samples, n)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(text))}</td>" for text in (
            s.get("tag") or "", _prompt_text(s.get("prompt")), s.get("base", ""), s.get("policy", ""))) + "</tr>"
        for s in shown
    )
    return (f"<h2>Samples ({len(shown)} of {len(samples)}, taken in turn from each prompt tag)</h2>"
            f'<table class="sample"><tr><th>tag</th><th>prompt</th><th>base</th><th>aligned</th></tr>{rows}</table>')


# ---------------------------------------------------------------- entry point


def write_report(
    run_dir,
    *,
    metrics_rows: list[dict],
    eval_results: dict,
    ablation: list[dict] | None = None,
    title: str = "alignkit report",
    n_samples: int = 8,
) -> Path:
    """Write ``run_dir/report.html`` (+ ``report_plots/*.png``, ``eval_results.json``); return its path.

    ``metrics_rows``: training log rows such as ``{"step": 10, "loss": 0.6, "rewards/margins": 0.2}``
    (keys may be missing from any row). ``eval_results``: the dict ``evaluate_policy`` returns.
    ``ablation``: optional rows like ``{"beta": 0.1, "win_rate": 0.62, "kl": 3.1}``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    curves = training_curve_pngs(metrics_rows or [])
    frontier = ablation_png(ablation) if ablation else None
    _save_pngs(run_dir, {**curves, **({"ablation frontier": frontier} if frontier else {})})
    (run_dir / "eval_results.json").write_text(json.dumps(eval_results, indent=2, ensure_ascii=False, default=str), encoding="utf-8")

    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        + _curves_section(curves)
        + _evaluation_section(eval_results or {})
        + judge_panel_section(eval_results or {})
        + sycophancy_section(eval_results or {})
        + _ablation_section(ablation, frontier)
        + _samples_section((eval_results or {}).get("samples") or [], n_samples)
        + _refusal_prompts_section((eval_results or {}).get("samples") or [])
        + "</body></html>\n"
    )
    path = run_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
