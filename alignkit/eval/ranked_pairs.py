"""Preference pairs from a model's own samples, ranked by a reward function (the recipe stage
``method: sample-rank``): the DPO paper's controlled-sentiment data (§6.1: samples of the base model
ranked by a sentiment classifier), or RLAIF with any reward of ``alignkit.rewards``.

    prompts ──► engine: n samples each ──► reward ──► every pair (i, j) of a prompt's samples
            with different rewards: the higher is chosen  (n = 4: up to 6 pairs a prompt)
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from alignkit.train.online import OnlineConfig


class SampleRankConfig(OnlineConfig):
    """Sample ``samples`` completions per prompt and write every pair they rank."""

    samples: int = 4
    """Completions sampled per prompt (all C(n, 2) pairs with different rewards are written)."""
    limit: int | None = None
    """Use the first N prompts (default: all)."""


def pairs_of(prompt, texts: list[str], scores: list[float]) -> list[dict]:
    """Every pair of ``texts`` whose scores differ, the higher-scored one as ``chosen`` (TRL's
    conversational shape when the prompt is chat messages)."""
    as_turn = (lambda t: [{"role": "assistant", "content": t}]) if isinstance(prompt, list) else (lambda t: t)
    rows = []
    for i, j in itertools.combinations(range(len(texts)), 2):
        if scores[i] == scores[j]:
            continue
        high, low = (i, j) if scores[i] > scores[j] else (j, i)
        rows.append({"prompt": prompt, "chosen": as_turn(texts[high]), "rejected": as_turn(texts[low]),
                     "chosen_score": scores[high], "rejected_score": scores[low]})
    return rows


def write_ranked_pairs(cfg: SampleRankConfig, path: Path) -> dict:
    """Sample, score and write the pairs to ``path`` (JSONL); returns counts and the mean reward."""
    from alignkit.models import load_policy, load_tokenizer
    from alignkit.train.online import build_reward_set, load_prompts, make_rollout_engine, sample_and_reward

    tokenizer = load_tokenizer(cfg.model)
    model = load_policy(cfg.model).eval()
    prompts = load_prompts(cfg.prompts or cfg.data, tokenizer, max_prompt_length=cfg.max_prompt_length or cfg.max_length // 2)
    prompts = prompts[: cfg.limit]
    engine = make_rollout_engine(model, tokenizer, cfg)
    rewards = build_reward_set(cfg.reward, cfg.reward_weights)
    rollouts, result = sample_and_reward(engine, rewards, prompts, n=cfg.samples, cfg=cfg, seed=cfg.seed)
    rows = []
    for p, prompt in enumerate(prompts):
        span = range(p * cfg.samples, (p + 1) * cfg.samples)
        rows += pairs_of(prompt.prompt, [rollouts.texts[r] for r in span], [result.total[r] for r in span])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return {"path": str(path), "prompts": len(prompts), "pairs": len(rows), **result.metrics()}
