"""RLAIF preference labelling (Bai et al. 2022 §4; Lee et al. 2023): the policy samples two
responses per prompt and a judge, usually the constitution judge, picks the better one.

The judge is asked in both orders and its position bias cancelled per pair, s = (p_ab + 1 − p_ba)/2
(``position_debiased_scores``). A pair becomes a preference row only when s ≠ 0.5; the others are
counted, never guessed: identical samples, ties (s = 0.5, which is also what a judge that always
says "A" gives), and pairs where either order's answer was unparseable (one order alone would
keep its position bias).

Rows are TRL's conversational preference shape: ``{"prompt", "chosen", "rejected", "rlaif": {"score"}}``,
where score is the judge's debiased P(chosen ≻ rejected) (> 0.5).
"""

from __future__ import annotations

import math


def label_pairs(policy, judge, prompts: list[list[dict]], *, max_tokens: int = 128, temperature: float = 1.0,
                seed: int = 0) -> tuple[list[dict], dict]:
    """(rows, stats). ``policy`` is a chat backend sampling the two responses (seeds ``seed``, ``seed + 1``)."""
    first = [r or "" for r in policy.chat(prompts, max_tokens=max_tokens, temperature=temperature, seed=seed)]
    second = [r or "" for r in policy.chat(prompts, max_tokens=max_tokens, temperature=temperature, seed=seed + 1)]
    p_ab = judge.judge(prompts, first, second)
    p_ba = judge.judge(prompts, second, first)
    rows, stats = [], {"prompts": len(prompts), "pairs": 0, "identical": 0, "empty": 0, "ties": 0, "unparseable": 0}
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
        score = (ab + 1.0 - ba) / 2.0
        if score == 0.5:
            stats["ties"] += 1
            continue
        chosen, rejected = (a, b) if score > 0.5 else (b, a)
        rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}],
                     "rlaif": {"score": max(score, 1.0 - score)}})
        stats["pairs"] += 1
    return rows, stats
