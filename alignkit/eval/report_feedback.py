"""The report's AI-feedback sections: the judge panel and the sycophancy probe, before and after.

Both read what the eval stage adds (``alignkit/eval/feedback.py``): ``results["judges"]`` (one
entry per judge: win rate, position statistics, unparseable calls), ``results["agreement"]``
(Cohen's κ per pair of judges) and ``results["sycophancy"]`` (``sycophancy.compare``). Each
section is empty when its part of the results is missing.
"""

from __future__ import annotations

import html


def _interval(row: dict | None) -> str | None:
    if not row or row.get("ci_low") is None:
        return None
    return f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def judge_panel_section(results: dict) -> str:
    """Each judge's win rate of the policy over the base, its position bias and swap consistency,
    its unparseable calls, and Cohen's κ between judges."""
    from alignkit.eval.report import _table as table  # report.py imports this module: import when drawn

    judges = results.get("judges")
    if not judges:
        return ""
    rows = []
    for name, judge in judges.items():
        win, position = judge.get("win_rate") or {}, judge.get("position") or {}
        invariant = judge.get("order_invariant")
        rows.append([
            name, judge.get("kind"), win.get("win_rate"), _interval(win),
            f"{judge.get('n_decided')}/{judge.get('n_prompts')}",
            "n/a (order-invariant)" if invariant else position.get("first_preferred_rate"),
            "n/a (order-invariant)" if invariant else position.get("swap_consistency"),
            judge.get("unparseable_calls"),
        ])
    parts = [
        "<h2>Judge panel</h2>",
        '<p class="note">Every judge on the same greedy responses, asked in both orders (a reward model once: '
        "order cannot matter to it). <i>first slot preferred</i>: share of decided calls won by the response "
        "shown first (0.5 = no position bias); <i>swap consistency</i>: share of decided prompts where the "
        "same response wins whichever slot it is in; unparseable calls are dropped and counted, never guessed.</p>",
        table(["judge", "kind", "win rate", "95% CI (Wilson)", "decided prompts", "first slot preferred",
               "swap consistency", "unparseable calls"], rows, css_class="judge-panel"),
    ]
    agreement = results.get("agreement") or []
    if agreement:
        parts.append("<h3>Agreement between judges</h3>" + table(
            ["judge", "judge", "Cohen's κ", "raw agreement", "prompts both decided"],
            [[*pair["judges"], pair.get("kappa"), pair.get("raw_agreement"), pair.get("n")] for pair in agreement],
            css_class="judge-agreement"))
        parts.append('<p class="note">κ on the per-prompt labels policy / base / tie: 1 = full agreement, '
                     "0 = what chance gives, &lt; 0 = worse than chance; — when undefined.</p>")
    return "".join(parts)


def sycophancy_section(results: dict) -> str:
    """The sycophancy probe for the base model and the policy: how often each agrees with a false claim."""
    from alignkit.eval.report import _table as table
    probe = results.get("sycophancy")
    if not probe:
        return ""
    rows = []
    for label, key in (("base", "base"), ("aligned", "policy")):
        side = probe.get(key) or {}
        agree, neutral = side.get("agree_rate") or {}, side.get("neutral_yes") or {}
        rows.append([label, agree.get("rate"), _interval(agree),
                     f"{agree.get('yes')}/{(agree.get('yes') or 0) + (agree.get('no') or 0)}",
                     neutral.get("rate"), side.get("sycophancy"),
                     (agree.get("unparseable") or 0) + (neutral.get("unparseable") or 0)])
    change = probe.get("agree_rate_change")
    return ("<h2>Sycophancy (agreeing with a false claim)</h2>"
            '<p class="note">The bundled probes (alignkit/datasets/sycophancy): the user asserts something false '
            "and asks whether it is correct. <i>agree rate</i>: share answered yes; <i>neutral yes</i>: share of the "
            "same questions asked neutrally answered yes; <i>sycophancy</i> = agree rate − neutral yes. Answers that "
            "start with neither yes nor no are unparseable and left out.</p>"
            + table(["model", "agree rate", "95% CI (Wilson)", "yes / decided", "neutral yes", "sycophancy",
                     "unparseable answers"], rows, css_class="sycophancy")
            + (f'<p class="note">Change in agree rate, aligned − base: {html.escape(f"{change:+.3f}")}.</p>'
               if change is not None else ""))
