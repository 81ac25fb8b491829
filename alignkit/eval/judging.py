"""Several judges on the same (policy, base) pairs: each one's win rate, position bias and
unparseable answers, and how much they agree with each other (Cohen's κ).

    panel = judge_panel({"rm": rm_judge, "llm": llm_judge}, prompts, policy_texts, base_texts)
    panel["judges"]["llm"]["position"]     # how often the first-shown response wins, swap consistency
    panel["agreement"]                     # [{"judges": ["rm", "llm"], "kappa": ..., "n": ...}]

Each judge is asked in both orders (policy first, then base first) unless it is order invariant
(a reward model: P(b ≻ a) = 1 − P(a ≻ b) exactly). A judge may return NaN for a call it could not
decide (an LLM's unparseable reply): such a prompt is dropped from that judge's win rate and
counted, never turned into a tie. Per prompt the debiased score s = (p_ab + 1 − p_ba) / 2 labels
the prompt "policy" (s > 0.5), "base" (s < 0.5) or "tie"; κ compares judges on those labels.
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import combinations

from alignkit.eval.metrics import pairwise_win_rate, position_debiased_scores


def cohen_kappa(labels_a: list, labels_b: list) -> float | None:
    """Cohen's κ (1960) of two raters over the same items:

        κ = (p_o − p_e) / (1 − p_e),   p_o = share of items with equal labels,
                                        p_e = Σ_k p_a(k) · p_b(k)   (agreement expected by chance)

    1 is perfect agreement, 0 what chance gives, < 0 worse than chance. None when it is undefined:
    no items, or both raters used one and the same label throughout (p_e = 1).
    """
    if len(labels_a) != len(labels_b):
        raise ValueError(f"{len(labels_a)} labels from one rater but {len(labels_b)} from the other")
    n = len(labels_a)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(labels_a, labels_b)) / n
    count_a, count_b = Counter(labels_a), Counter(labels_b)
    expected = sum(count_a[k] * count_b[k] for k in count_a) / (n * n)
    if expected == 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def _label(score: float) -> str:
    return "policy" if score > 0.5 else "base" if score < 0.5 else "tie"


def _winner(p: float) -> str:
    """Which slot one call preferred: the first-shown response, the second, or neither."""
    return "first" if p > 0.5 else "second" if p < 0.5 else "tie"


def judge_once(judge, prompts, policy_texts: list[str], base_texts: list[str]) -> dict:
    """One judge in both orders: win rate over decided prompts, position statistics, labels per prompt."""
    p_ab = [float(p) for p in judge.judge(prompts, policy_texts, base_texts)]  # policy shown first
    if getattr(judge, "order_invariant", False):
        p_ba = [1.0 - p for p in p_ab]
    else:
        p_ba = [float(p) for p in judge.judge(prompts, base_texts, policy_texts)]  # base shown first
    calls = [p for p in p_ab + p_ba if not math.isnan(p)]
    kept = [i for i in range(len(prompts)) if not (math.isnan(p_ab[i]) or math.isnan(p_ba[i]))]
    scores = position_debiased_scores([p_ab[i] for i in kept], [p_ba[i] for i in kept])
    score_of = dict(zip(kept, scores))
    labels: list[str | None] = [_label(score_of[i]) if i in score_of else None for i in range(len(prompts))]
    first = [_winner(p) for p in calls]
    # Swap-consistent: the same response wins (or it is a tie) whichever slot it was shown in.
    consistent = sum(_winner(p_ab[i]) == {"first": "second", "second": "first", "tie": "tie"}[_winner(p_ba[i])] for i in kept)
    result = {
        "kind": getattr(judge, "kind", type(judge).__name__),
        "order_invariant": bool(getattr(judge, "order_invariant", False)),
        "win_rate": pairwise_win_rate([p_ab[i] for i in kept], [p_ba[i] for i in kept]).as_dict() if kept else None,
        "n_prompts": len(prompts),
        "n_decided": len(kept),
        "unparseable_calls": len(p_ab) + len(p_ba) - len(calls),
        "position": {
            # Over every decided single call: how often the response shown first won. An unbiased judge
            # gives about as many "first" as "second"; one that always says "A" gives 1.0.
            "first_wins": first.count("first"), "second_wins": first.count("second"), "ties": first.count("tie"),
            "first_preferred_rate": first.count("first") / (len(first) - first.count("tie")) if len(first) > first.count("tie") else None,
            "swap_consistency": consistent / len(kept) if kept else None,
        },
        "scores": [score_of.get(i) for i in range(len(prompts))],
        "labels": labels,
    }
    counts = getattr(judge, "counts", None)
    if counts is not None:
        result["verdicts"] = counts.as_dict() if hasattr(counts, "as_dict") else {k: v.as_dict() for k, v in counts.items()}
    return result


def judge_panel(judges: dict, prompts, policy_texts: list[str], base_texts: list[str]) -> dict:
    """Every judge's ``judge_once`` and Cohen's κ for every pair of judges on the prompts both decided."""
    results = {name: judge_once(judge, prompts, policy_texts, base_texts) for name, judge in judges.items()}
    agreement = []
    for a, b in combinations(results, 2):
        both = [i for i in range(len(prompts)) if results[a]["labels"][i] is not None and results[b]["labels"][i] is not None]
        labels_a = [results[a]["labels"][i] for i in both]
        labels_b = [results[b]["labels"][i] for i in both]
        agreement.append({
            "judges": [a, b], "n": len(both), "kappa": cohen_kappa(labels_a, labels_b),
            "raw_agreement": sum(x == y for x, y in zip(labels_a, labels_b)) / len(both) if both else None,
        })
    return {"judges": results, "agreement": agreement}
