"""The ``eval`` stage of a recipe (and ``alignkit eval``): policies vs a baseline on held-out prompts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# Bundled-data kinds that a refusal-rate metric should read separately.
REFUSAL_TAGS = {"declines_harmful": "harmful", "helps_benign": "benign"}


def prompt_tag(meta: dict) -> str:
    return REFUSAL_TAGS.get(meta.get("kind"), meta.get("category", "other"))


def load_prompts(spec: str, limit: int | None = None, seed: int = 0) -> tuple[list[list[dict]], list[str]]:
    """Prompts (as chat messages) and their tags from a preference or prompt file.

    ``limit``: a seeded random sample of that many, kept in file order. Not the first N: a bundled
    split lists its files one after another, so its first N would all be one kind of prompt.
    """
    import random

    from alignkit.data import read_records
    from alignkit.train.setup import data_files

    prompts, tags = [], []
    for path in data_files(spec):
        for record in read_records(path, "prompt").records:
            prompt = record.prompt if isinstance(record.prompt, list) else [{"role": "user", "content": record.prompt}]
            prompts.append(prompt)
            tags.append(prompt_tag(record.meta))
    if limit is None or limit >= len(prompts):
        return prompts, tags
    keep = sorted(random.Random(seed).sample(range(len(prompts)), limit))
    return [prompts[i] for i in keep], [tags[i] for i in keep]


def run_name(path: str) -> str:
    """A short name for a policy: the run directory for ``runs/x/model``, else the id itself."""
    p = Path(path)
    return p.parent.name if p.is_dir() and p.name == "model" and p.parent.name else path


def _prompt_key(prompt: list[dict]) -> str:
    return " ".join(" ".join(m.get("content", "") for m in prompt if m.get("role") == "user").lower().split())


def training_data(pipeline, ref: str | None) -> tuple[list[str], list[str]] | None:
    """The stages that produced model ``ref`` (following ``stage:`` models back to the base) and
    the data each trained on; None when ``ref`` is not a model this pipeline trained."""
    if not (isinstance(ref, str) and ref.startswith("stage:")):
        return None
    stage_of_path = {pipeline.model_path(f"stage:{n}"): n for n in pipeline.results}
    stages, name = [], ref.split(":", 1)[1]
    while name in pipeline.results and "config" in pipeline.results[name] and name not in stages:
        stages.append(name)
        name = stage_of_path.get(pipeline.results[name]["config"].get("model"))
    stages.reverse()  # base first
    configs = [pipeline.results[stage]["config"] for stage in stages]
    specs = list(dict.fromkeys(spec for config in configs for spec in (config.get("data"), config.get("prompts")) if spec))
    return (stages, specs) if stages else None


def judge_provenance(pipeline, judge_ref: str | None, policy_ref: str, eval_prompts: list[list[dict]]) -> dict | None:
    """What the judge and the policy were trained on and how many prompts they share with each
    other and with the held-out prompts: the facts behind "the judge is independent"."""
    if not judge_ref:
        return None
    judge, policy = training_data(pipeline, judge_ref), training_data(pipeline, policy_ref)
    if judge is None:
        return {"statement": f"The judge ({pipeline.model_path(judge_ref)}) was not trained by this pipeline; "
                             "what it shares with the policy's training data is not known here."}
    keys = {name: {_prompt_key(p) for spec in specs for p in load_prompts(spec)[0]}
            for name, specs in (("judge", judge[1]), ("policy", (policy or ([], []))[1]))}
    held_out = {_prompt_key(p) for p in eval_prompts}
    facts = {
        "judge_stages": judge[0], "judge_data": judge[1], "judge_prompts": len(keys["judge"]),
        "policy_stages": (policy or ([], []))[0], "policy_data": (policy or ([], []))[1], "policy_prompts": len(keys["policy"]),
        "shared_judge_policy": len(keys["judge"] & keys["policy"]),
        "held_out_in_judge_data": len(held_out & keys["judge"]), "held_out_in_policy_data": len(held_out & keys["policy"]),
    }
    facts["statement"] = (
        f"The judge was trained in stage(s) {', '.join(facts['judge_stages'])} on {', '.join(facts['judge_data'])} "
        f"({facts['judge_prompts']} distinct prompts); the policy in stage(s) {', '.join(facts['policy_stages']) or '—'} on "
        f"{', '.join(facts['policy_data']) or '—'} ({facts['policy_prompts']} distinct prompts, counted over the whole files "
        f"a stage samples from). Prompts the judge and the policy both trained on: {facts['shared_judge_policy']}. "
        f"Held-out prompts seen in training: judge {facts['held_out_in_judge_data']}, policy {facts['held_out_in_policy_data']}.")
    return facts


def run_eval_stage(pipeline, name: str, fields: dict) -> dict:
    """Evaluate each policy against the baseline; write ``<out>/<name>/eval.json``."""
    from alignkit.eval.evaluate import evaluate_policy
    from alignkit.eval.feedback import add_judge_panel, add_sycophancy, load_judges
    from alignkit.eval.sycophancy import sycophancy_probe
    from alignkit.models import load_policy, load_tokenizer

    out = pipeline.out / name
    out.mkdir(parents=True, exist_ok=True)
    policies = fields.get("policies") or [fields["policy"]]
    spec = fields.get("prompts") or pipeline.recipe.get("eval_data") or "hhh:test"
    prompts, tags = load_prompts(spec, fields.get("limit"))
    # Judges of every kind (alignkit.eval.feedback): a reward model also drives evaluate_policy's win rate.
    # The recipe's dtype, as its training stages use it: an fp32 recipe on a GPU is judged in fp32 too
    # (greedy answers of a small model in bf16 differ from its fp32 ones).
    dtype = fields.get("dtype", pipeline.recipe.get("defaults", {}).get("dtype"))
    dtype = None if dtype in (None, "auto") else dtype
    judge_spec, judge, panel = load_judges(pipeline, fields, cache_dir=out / "judge-cache", dtype=dtype)
    base_path = pipeline.model_path(fields.get("baseline", "base"))
    tokenizer = load_tokenizer(base_path)
    base = load_policy(base_path, dtype=dtype).eval()
    base_probe = sycophancy_probe(base, tokenizer) if fields.get("sycophancy") else None
    results, ablation = {}, []
    for ref in policies:
        stage_name = ref.split(":", 1)[1] if ref.startswith("stage:") else run_name(ref)
        policy = load_policy(pipeline.model_path(ref), dtype=dtype).eval()
        log.info("evaluating %s against %s on %d prompts", ref, base_path, len(prompts))
        results[stage_name] = evaluate_policy(
            policy, base, tokenizer, prompts, judge=judge, prompt_tags=tags,
            max_new_tokens=fields.get("max_new_tokens", 128), progress=True,
            # Decoding a 135M model on CPU is per-step overhead bound: wide batches amortise it.
            batch_size=fields.get("batch_size", 32), kl_prompts=fields.get("kl_prompts"),
        )
        results[stage_name]["judge_provenance"] = judge_provenance(pipeline, judge_spec, ref, prompts)
        add_judge_panel(results[stage_name], panel, prompts)
        if base_probe is not None:
            add_sycophancy(results[stage_name], base_probe, policy, tokenizer)
        trained = pipeline.results.get(stage_name, {}).get("config", {})
        ablation.append({
            "policy": stage_name,
            "beta": trained.get("beta"),
            "win_rate": results[stage_name]["win_rate"]["win_rate"] if results[stage_name]["win_rate"] else None,
            "kl": (results[stage_name].get("kl") or {}).get("k3"),
        })
    (out / "eval.json").write_text(json.dumps(results, indent=2))
    return {"eval_results": results, "policies": list(results), "ablation": ablation if len(ablation) > 1 else None}
