"""Evaluate an aligned policy against its base model on held-out prompts.

What comes out (a JSON-serialisable dict):
  win_rate      policy over base (``pairwise_win_rate``; the judge asked in both orders unless it is
                order-invariant, as a reward model is), and per prompt tag
  reward        mean reward of each model's responses, when the judge scores pointwise
  kl            KL(policy ‖ reference) from policy samples (``sampled_kl``; reference = base by default),
                on every prompt or on ``kl_prompts`` of them spread evenly over the list
  length        mean lengths and their ratio (``length_drift``, in tokens)
  distinct      distinct-1 / distinct-2 of each model's responses
  refusal_rate  per prompt tag ("all" plus each tag, e.g. "harmful", "benign"): rates and counts, base and policy
  samples       every (prompt, tag, base, policy) with the per-prompt judge score and refusal flags
Win rate, rewards, lengths, diversity and refusals use greedy responses; only KL samples.
"""

from __future__ import annotations

from collections.abc import Callable

from alignkit.eval.metrics import distinct_n, length_drift, pairwise_win_rate, position_debiased_scores
from alignkit.eval.sampled_kl import sampled_kl
from alignkit.judges.base import PairwiseJudge, ScoringJudge
from alignkit.rewards.refusal import refusal_detector as default_refusal_detector
from alignkit.rollout.generate import generate


def spread(items: list, k: int | None) -> list:
    """``k`` items evenly spaced over ``items`` (all of them when ``k`` is None or not smaller):
    held-out files are grouped by kind, so the first k would all be of one kind."""
    if k is None or k >= len(items):
        return items
    if k < 1:
        raise ValueError(f"kl_prompts must be at least 1, got {k}")
    return [items[i * len(items) // k] for i in range(k)]


def _rows_by_tag(tags: list[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, tag in enumerate(tags):
        groups.setdefault(tag, []).append(i)
    return groups


def _refusal_by_tag(base_refused: list[bool], policy_refused: list[bool], tags: list[str] | None) -> dict:
    """Per tag: how many prompts, how many responses of each model the detector calls refusals, and the rates."""
    groups = {"all": list(range(len(base_refused))), **_rows_by_tag(tags or [])}
    table = {}
    for tag, rows in groups.items():
        counts = {"base_count": sum(base_refused[i] for i in rows), "policy_count": sum(policy_refused[i] for i in rows)}
        table[tag] = {"n": len(rows), "base": counts["base_count"] / len(rows), "policy": counts["policy_count"] / len(rows), **counts}
    return table


def _mean(values: list[float | None]) -> float | None:
    """Mean over the values a reward applied to (None = not applicable); None if there are none."""
    applicable = [v for v in values if v is not None]
    return sum(applicable) / len(applicable) if applicable else None


def evaluate_policy(
    policy,
    base,
    tokenizer,
    prompts: list[list[dict]],
    *,
    judge: PairwiseJudge | None = None,
    reference=None,
    max_new_tokens: int = 128,
    prompt_tags: list[str] | None = None,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = False,
    refusal_detector: Callable[[str], bool] | None = None,
    kl_prompts: int | None = None,
) -> dict:
    """Compare ``policy`` with ``base`` on ``prompts`` (chat message lists); see the module doc.

    ``judge``: any ``PairwiseJudge``; without one, win rate and rewards are None.
    ``reference``: the model KL is measured against (defaults to ``base``).
    ``prompt_tags``: one tag per prompt for the per-tag refusal rates.
    ``refusal_detector``: text -> refused? (default: the keyword heuristic ``alignkit.rewards.refusal_detector``).
    ``kl_prompts``: how many prompts the KL estimate samples (default: all). Its sampling and two
    scoring passes cost as much as one greedy rollout; its standard error (``k3_stderr``) says
    what a smaller sample gives up.
    """
    if not prompts:
        raise ValueError("evaluate_policy needs at least one prompt")
    if prompt_tags is not None and len(prompt_tags) != len(prompts):
        raise ValueError(f"{len(prompt_tags)} tags for {len(prompts)} prompts")
    options = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
    base_texts = [g.text for g in generate(base, tokenizer, prompts, do_sample=False, **options)]
    policy_texts = [g.text for g in generate(policy, tokenizer, prompts, do_sample=False, **options)]
    # All sampling before any judging: a judge that loads its model at first use
    # (RewardModelJudge.from_path) is then never in memory beside the rollout engine's weights.
    kl = sampled_kl(policy, reference if reference is not None else base, tokenizer, spread(prompts, kl_prompts),
                    seed=seed, **options)

    win_rate, judge_scores, reward, rewards = None, [None] * len(prompts), None, None
    order_invariant = bool(getattr(judge, "order_invariant", False))
    if judge is not None:
        p_ab = judge.judge(prompts, policy_texts, base_texts)  # policy shown first
        # A pointwise judge (a reward model) gives P(b ≻ a) = 1 − P(a ≻ b): a second order adds nothing.
        p_ba = [1.0 - p for p in p_ab] if order_invariant else judge.judge(prompts, base_texts, policy_texts)
        win_rate = pairwise_win_rate(p_ab, p_ba).as_dict()
        judge_scores = position_debiased_scores(p_ab, p_ba)
        if prompt_tags and len(set(prompt_tags)) > 1:  # which kinds of prompt the wins come from
            win_rate["by_tag"] = {
                tag: pairwise_win_rate([p_ab[i] for i in rows], [p_ba[i] for i in rows]).as_dict()
                for tag, rows in _rows_by_tag(prompt_tags).items()}
    if isinstance(judge, ScoringJudge):
        rewards = {"base": judge.score(prompts, base_texts), "policy": judge.score(prompts, policy_texts)}
        reward = {name: _mean(values) for name, values in rewards.items()}

    detect = refusal_detector if refusal_detector is not None else default_refusal_detector
    base_refused, policy_refused = [detect(t) for t in base_texts], [detect(t) for t in policy_texts]
    samples = []
    for i, prompt in enumerate(prompts):
        sample = {
            "prompt": prompt,
            "tag": prompt_tags[i] if prompt_tags else None,
            "base": base_texts[i],
            "policy": policy_texts[i],
            "judge_score": judge_scores[i],  # P(policy ≻ base), both orders averaged
            "base_refused": base_refused[i],
            "policy_refused": policy_refused[i],
        }
        if rewards is not None:
            sample.update(base_reward=rewards["base"][i], policy_reward=rewards["policy"][i])
        samples.append(sample)

    return {
        "n_prompts": len(prompts),
        "max_new_tokens": max_new_tokens,
        "judge": type(judge).__name__ if judge is not None else None,
        "judge_order_invariant": order_invariant if judge is not None else None,
        "win_rate": win_rate,
        "reward": reward,
        "kl": kl,
        "length": length_drift(base_texts, policy_texts, tokenizer),
        "distinct": {
            "base": {"distinct_1": distinct_n(base_texts, 1), "distinct_2": distinct_n(base_texts, 2)},
            "policy": {"distinct_1": distinct_n(policy_texts, 1), "distinct_2": distinct_n(policy_texts, 2)},
        },
        "refusal_rate": _refusal_by_tag(base_refused, policy_refused, prompt_tags),
        "samples": samples,
    }
