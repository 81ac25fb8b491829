"""The reward-KL frontier (the recipe stage ``method: frontier``; DPO paper §6.1, Fig. 2 left):
for each trained policy, the mean held-out reward against the mean sequence KL(π‖π_ref).

Every point is measured the same way: one sample per held-out prompt at temperature 1 (the
policy's own distribution, as the KL estimate needs), the reward of those samples, and
KL = mean over samples of Σ_t (log π − log π_ref) on the sampled tokens (k1, the estimate PPO's
in-training evaluation logs as ``eval/kl``). ``policies`` are measured here; ``curves`` are
stages whose own evaluations (``eval/kl``, ``eval/rewards/<reward>/mean`` every ``eval_every``
steps) are read from their metrics.jsonl.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from alignkit.train.online import OnlineConfig

log = logging.getLogger(__name__)


class FrontierConfig(OnlineConfig):
    """Reward and KL of policies on held-out prompts."""

    eval_temperature: float = 1.0
    """Sampling temperature of the measured samples (1: the policy's own distribution)."""


def measure(policy, reference, tokenizer, prompts, cfg: FrontierConfig) -> dict:
    """{"reward", "kl", "kl/k3", "n"} of ``policy`` on ``prompts`` (PromptRows), KL to ``reference``."""
    import torch

    from alignkit.losses import kl_penalty
    from alignkit.train.online import RolloutRow, build_reward_set, completion_logps, make_rollout_engine, sample_and_reward

    engine = make_rollout_engine(policy, tokenizer, cfg)
    rollouts, result = sample_and_reward(engine, build_reward_set(cfg.reward, cfg.reward_weights), prompts, n=1, cfg=cfg,
                                         seed=cfg.seed, held_out=True)
    rows = [RolloutRow(p, c, lp, 0.0) for p, c, lp in zip(rollouts.prompt_ids, rollouts.completion_ids, rollouts.logprobs)]
    kl = {"k1": 0.0, "k3": 0.0}
    for lp, ref in zip(completion_logps(policy, rows, tokenizer.pad_token_id), completion_logps(reference, rows, tokenizer.pad_token_id)):
        for name in kl:
            kl[name] += float(kl_penalty(torch.tensor(lp), torch.tensor(ref), estimator=name).sum())
    return {"reward": result.metrics()["reward"], "kl": kl["k1"] / len(rows), "kl/k3": kl["k3"] / len(rows), "n": len(rows)}


def curve_points(metrics_file: Path, reward: str) -> list[dict]:
    """(step, kl, reward) of every evaluation row of a run's metrics.jsonl."""
    from alignkit.train.logger import read_metrics

    key = f"eval/rewards/{reward}/mean"
    return [{"step": r["step"], "kl": r["eval/kl"], "reward": r[key]}
            for r in read_metrics(metrics_file) if "eval/kl" in r and key in r]


def run_frontier_stage(pipeline, name: str, fields: dict) -> dict:
    """Measure ``policies``, read ``curves``, write frontier.json, frontier.png and report.html."""
    from alignkit.eval.plots import frontier_png
    from alignkit.models import load_policy, load_tokenizer
    from alignkit.train.online import load_prompts

    out = pipeline.out / name
    out.mkdir(parents=True, exist_ok=True)
    fields = dict(fields)
    policies, curves = fields.pop("policies", []), fields.pop("curves", [])  # stage names are kept for labels
    reference_path = pipeline.model_path(fields.pop("reference", "base"))
    fields = {k: pipeline.resolve(v) for k, v in fields.items()}
    cfg = FrontierConfig(**{"model": reference_path, **fields})
    tokenizer = load_tokenizer(reference_path)
    prompts = load_prompts(cfg.prompts or cfg.eval_data, tokenizer, max_prompt_length=cfg.max_length // 2)[: cfg.eval_limit]
    reference = load_policy(reference_path).eval()
    methods = {s["name"]: s["method"] for s in pipeline.recipe["stages"]}
    points = [{"method": "base", "policy": "base", **measure(reference, reference, tokenizer, prompts, cfg)}]
    for ref in policies:
        stage = ref.split(":", 1)[1] if ref.startswith("stage:") else ref
        log.info("frontier: measuring %s on %d prompts", ref, len(prompts))
        policy = load_policy(pipeline.model_path(ref)).eval()
        trained = pipeline.results.get(stage, {}).get("config", {})
        points.append({"method": methods.get(stage, stage), "policy": stage, "beta": trained.get("beta"),
                       "target_kl": trained.get("target_kl"), **measure(policy, reference, tokenizer, prompts, cfg)})
    reward = cfg.reward[0]
    for stage in curves:
        trained = pipeline.results.get(stage, {}).get("config", {})
        for point in curve_points(pipeline.out / stage / "metrics.jsonl", reward):
            points.append({"method": f"{methods.get(stage, stage)} (training curve)", "policy": stage,
                           "target_kl": trained.get("target_kl"), **point})
    (out / "frontier.json").write_text(json.dumps(points, indent=2))
    png = frontier_png(points, reward=reward)
    (out / "frontier.png").write_bytes(png)
    report = write_frontier_report(out, points, png, title=pipeline.recipe.get("name", "reward-KL frontier"), reward=reward,
                                   n_prompts=len(prompts))
    return {"frontier": points, "report": str(report)}


def write_frontier_report(out: Path, points: list[dict], png: bytes, *, title: str, reward: str, n_prompts: int) -> Path:
    """A self-contained report.html: the frontier plot and the table of points."""
    import html

    from alignkit.eval.report import CSS, _img, _table

    columns = ["method", "policy", "beta", "target_kl", "step", "kl", "kl/k3", "reward"]
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<h2>Reward-KL frontier</h2><p class="note">{n_prompts} held-out prompts, one sample each at temperature 1; '
            f"reward: mean {html.escape(reward)}; KL: mean over samples of Σ_t log π/π_ref (k1).</p>"
            f'<div class="plots">{_img(png, "reward against KL")}</div>'
            + _table(columns, [[p.get(c) for c in columns] for p in points], css_class="frontier") + "</body></html>\n")
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
