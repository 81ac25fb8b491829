"""RLAIF preference labelling (Bai et al. 2022 §4; Lee et al. 2023): the policy samples two
responses per prompt and a judge, usually the constitution judge, picks the better one.

The judge is asked in both orders and its position bias cancelled per pair, s = (p_ab + (1 − p_ba))/2
(``position_debiased_scores``, exactly 0.5 when p_ab = p_ba). A pair becomes a preference row
only when s ≠ 0.5; the others are counted, never guessed: identical samples, ties (s = 0.5: what a
judge that always says "A" gives, or any judge whose P(first ≻ second) is the same in both
orders), and pairs where either order's answer was unparseable (one order alone would keep its
position bias).

Rows are TRL's conversational preference shape: ``{"prompt", "chosen", "rejected", "rlaif": {"score"}}``,
where score is the judge's debiased P(chosen ≻ rejected) (> 0.5).

Stats, beside the counts: ``decidedness``, the mean |s − 0.5| over the pairs scored in both orders
(0: every pair a tie; 0.5: every verdict certain), and, from a judge that keeps tallies
(``counts``), its ``verdicts`` per principle and ``mean_letter_mass`` over all its calls (how
much of the judge's next-token probability went to the letters A, B, C; None for letter verdicts).
"""

from __future__ import annotations

import math

from alignkit.eval.metrics import position_debiased_scores


def label_pairs(policy, judge, prompts: list[list[dict]], *, max_tokens: int = 128, temperature: float = 1.0,
                seed: int = 0) -> tuple[list[dict], dict]:
    """(rows, stats). ``policy`` is a chat backend sampling the two responses (seeds ``seed``, ``seed + 1``)."""
    first = [r or "" for r in policy.chat(prompts, max_tokens=max_tokens, temperature=temperature, seed=seed)]
    second = [r or "" for r in policy.chat(prompts, max_tokens=max_tokens, temperature=temperature, seed=seed + 1)]
    p_ab = judge.judge(prompts, first, second)
    p_ba = judge.judge(prompts, second, first)
    rows, stats = [], {"prompts": len(prompts), "pairs": 0, "identical": 0, "empty": 0, "ties": 0, "unparseable": 0}
    offsets = []  # |s − 0.5| of every pair scored in both orders
    for prompt, a, b, ab, ba in zip(prompts, first, second, p_ab, p_ba):
        if a.strip() == b.strip():
            stats["identical"] += 1
            continue
        if not (a.strip() and b.strip()):  # an empty side is no preference worth training on
            stats["empty"] += 1
            continue
        if math.isnan(ab) or math.isnan(ba):  # one order alone would keep its position bias
            stats["unparseable"] += 1
            continue
        (score,) = position_debiased_scores([ab], [ba])
        offsets.append(abs(score - 0.5))
        if score == 0.5:
            stats["ties"] += 1
            continue
        chosen, rejected = (a, b) if score > 0.5 else (b, a)
        rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}],
                     "rlaif": {"score": max(score, 1.0 - score)}})
        stats["pairs"] += 1
    stats["decidedness"] = sum(offsets) / len(offsets) if offsets else None
    return rows, stats | judge_stats(judge)


def judge_stats(judge) -> dict:
    """``verdicts`` (tallies per principle, or the judge's one tally) and ``mean_letter_mass`` over
    every call; {} for a judge that keeps no tallies."""
    counts = getattr(judge, "counts", None)
    if counts is None:
        return {}
    tallies = counts if isinstance(counts, dict) else {"all": counts}
    calls = sum(t.letter_mass_calls for t in tallies.values())
    return {"verdicts": {name: t.as_dict() for name, t in tallies.items()},
            "mean_letter_mass": sum(t.letter_mass_sum for t in tallies.values()) / calls if calls else None}
