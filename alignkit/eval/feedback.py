"""What the eval stage adds for AI feedback: several judges (reward model, local or remote LLM,
constitution) with their position bias and agreement, and the sycophancy probe before and after.

Recipe / ``alignkit eval`` fields this reads:

    judge: SPEC | [SPEC, ...]     see ``alignkit.judges.spec`` (a ``stage:NAME`` model is resolved)
    judge_api_key_env: VAR        the key of an endpoint judge (default: none)
    constitution: hhh | FILE      for ``constitution:`` judges
    sycophancy: true              run the bundled sycophancy probe on the baseline and each policy

The first reward-model judge goes to ``evaluate_policy`` as before (its win rate, rewards and
provenance). Every judge, that one included, goes to the panel (``judge_panel``) on the same
greedy responses; when no reward model is among them, the first judge's win rate (unparseable
prompts dropped and counted) becomes the result's ``win_rate``.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def judge_specs(fields: dict) -> list[str]:
    judges = fields.get("judge")
    return [] if not judges else [judges] if isinstance(judges, str) else list(judges)


def load_judges(pipeline, fields: dict, cache_dir, dtype=None) -> tuple[str | None, object | None, dict]:
    """(spec and judge of the first reward model, for ``evaluate_policy``, or None, None;
    {spec: judge} of every judge, for the panel). Local judge models load in ``dtype``."""
    from alignkit.judges.reward_model import RewardModelJudge
    from alignkit.judges.spec import load_judge

    panel = {}
    for spec in judge_specs(fields):
        kind, sep, rest = spec.partition(":")
        resolved = (f"{kind}:{pipeline.model_path(rest)}" if kind in ("rm", "llm", "constitution") and sep
                    else spec if spec.startswith(("http://", "https://")) else pipeline.model_path(spec))
        panel[spec] = load_judge(resolved, api_key_env=fields.get("judge_api_key_env"), cache_dir=cache_dir,
                                 constitution=fields.get("constitution", "hhh"), dtype=dtype)
    primary = next((spec for spec, j in panel.items() if isinstance(j, RewardModelJudge)), None)
    # Without its "rm:" the spec is the model reference provenance understands ("stage:rm", a path).
    return (primary.removeprefix("rm:") if primary else None), panel.get(primary), panel


def add_judge_panel(result: dict, panel: dict, prompts) -> None:
    """Judge ``result``'s own greedy responses with every judge; fill ``judges`` and ``agreement``."""
    from alignkit.eval.judging import judge_panel

    if not panel:
        return
    policy_texts = [s["policy"] for s in result["samples"]]
    base_texts = [s["base"] for s in result["samples"]]
    judged = judge_panel(panel, prompts, policy_texts, base_texts)
    for i, sample in enumerate(result["samples"]):
        sample["judges"] = {name: r["scores"][i] for name, r in judged["judges"].items()}
    for r in judged["judges"].values():
        del r["scores"], r["labels"]  # per prompt: in the samples
    result["judges"], result["agreement"] = judged["judges"], judged["agreement"]
    if result.get("win_rate") is None:
        name, first = next(iter(judged["judges"].items()))
        result["win_rate"], result["judge"] = first["win_rate"], name
    for name, r in judged["judges"].items():
        position = r["position"]
        log.info("judge %s: win rate %s over %d/%d decided prompts, swap consistency %s, first slot preferred %s",
                 name, _pct(r["win_rate"] and r["win_rate"]["win_rate"]), r["n_decided"], r["n_prompts"],
                 _pct(position["swap_consistency"]), _pct(position["first_preferred_rate"]))
    for pair in judged["agreement"]:
        log.info("agreement %s vs %s: kappa %s over %d prompts", *pair["judges"],
                 "n/a" if pair["kappa"] is None else f"{pair['kappa']:.2f}", pair["n"])


def add_sycophancy(result: dict, base_probe: dict, policy, tokenizer) -> None:
    from alignkit.eval.sycophancy import compare, sycophancy_probe

    policy_probe = sycophancy_probe(policy, tokenizer)
    result["sycophancy"] = compare(base_probe, policy_probe)
    result["sycophancy"]["samples"] = {"base": base_probe["samples"], "policy": policy_probe["samples"]}
    log.info("sycophancy: agrees with a false user claim %s (base) -> %s (policy)",
             _pct(base_probe["agree_rate"]["rate"]), _pct(policy_probe["agree_rate"]["rate"]))


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"
