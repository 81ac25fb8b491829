"""A pairwise judge as a reward function over each prompt's group of samples (online DPO).

Rows come in groups of ``group_size`` consecutive completions of one prompt (what the rollout
engine returns). Within a group every sample is compared with every other, in both orders, so
the judge's position bias cancels: s = (p_ab + 1 − p_ba) / 2 (``position_debiased_scores``).
A sample's reward is its mean s over the comparisons that were decided, in [0, 1]. An
unparseable verdict (NaN) in either order leaves that comparison out and is counted
(``unparseable``); a sample with no decided comparison gets None ("not applicable" in the
reward protocol), never a guessed 0.5. Cost: n(n − 1) judge calls per prompt (2 for n = 2).
"""

from __future__ import annotations

import math

from alignkit.rewards.protocol import completion_text, prompt_messages


class RoundRobinJudgeReward:
    """TRL's reward protocol on top of a ``PairwiseJudge``; ``unparseable`` counts the comparisons dropped."""

    __name__ = "judge"

    def __init__(self, judge, group_size: int):
        if group_size < 2:
            raise ValueError(f"a judge compares samples: group_size must be at least 2, got {group_size}")
        self.judge, self.group_size, self.unparseable = judge, group_size, 0

    def __call__(self, prompts, completions, completion_ids=None, **columns) -> list[float | None]:
        from alignkit.eval.metrics import position_debiased_scores

        n, rows = self.group_size, len(completions)
        if rows % n:
            raise ValueError(f"{rows} completions are not groups of {n} samples per prompt")
        pairs = [(g + i, g + j) for g in range(0, rows, n) for i in range(n) for j in range(i + 1, n)]
        texts = [completion_text(c) for c in completions]
        messages = [prompt_messages(prompts[a]) for a, _ in pairs]
        firsts, seconds = [texts[a] for a, _ in pairs], [texts[b] for _, b in pairs]
        p_ab = [float(p) for p in self.judge.judge(messages, firsts, seconds)]
        if getattr(self.judge, "order_invariant", False):  # a reward model: the swap is exactly 1 − p
            p_ba = [1.0 - p for p in p_ab]
        else:
            p_ba = [float(p) for p in self.judge.judge(messages, seconds, firsts)]
        wins: list[list[float]] = [[] for _ in range(rows)]
        for (a, b), ab, ba in zip(pairs, p_ab, p_ba):
            if math.isnan(ab) or math.isnan(ba):
                self.unparseable += 1
                continue
            (s,) = position_debiased_scores([ab], [ba])
            wins[a].append(s)
            wins[b].append(1.0 - s)
        return [sum(w) / len(w) if w else None for w in wins]
