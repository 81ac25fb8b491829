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


def load_prompts(spec: str, limit: int | None = None) -> tuple[list[list[dict]], list[str]]:
    """Held-out prompts (as chat messages) and their tags from a preference or prompt file."""
    from alignkit.data import read_records
    from alignkit.train.setup import data_files

    prompts, tags = [], []
    for path in data_files(spec):
        for record in read_records(path, "prompt").records:
            prompt = record.prompt if isinstance(record.prompt, list) else [{"role": "user", "content": record.prompt}]
            prompts.append(prompt)
            tags.append(prompt_tag(record.meta))
    return prompts[:limit], tags[:limit]


def run_name(path: str) -> str:
    """A short name for a policy: the run directory for ``runs/x/model``, else the id itself."""
    p = Path(path)
    return p.parent.name if p.is_dir() and p.name == "model" and p.parent.name else path


def load_judge(path: str):
    from alignkit.judges import RewardModelJudge
    from alignkit.models.heads import load_scalar_model

    model, tokenizer = load_scalar_model(path)
    return RewardModelJudge(model.eval(), tokenizer)


def run_eval_stage(pipeline, name: str, fields: dict) -> dict:
    """Evaluate each policy against the baseline; write ``<out>/<name>/eval.json``."""
    from alignkit.eval.evaluate import evaluate_policy
    from alignkit.models import load_policy, load_tokenizer

    out = pipeline.out / name
    out.mkdir(parents=True, exist_ok=True)
    policies = fields.get("policies") or [fields["policy"]]
    spec = fields.get("prompts") or pipeline.recipe.get("eval_data") or "hhh:test"
    prompts, tags = load_prompts(spec, fields.get("limit"))
    judge = load_judge(pipeline.model_path(fields["judge"])) if fields.get("judge") else None
    base_path = pipeline.model_path(fields.get("baseline", "base"))
    tokenizer = load_tokenizer(base_path)
    base = load_policy(base_path).eval()
    results, ablation = {}, []
    for ref in policies:
        stage_name = ref.split(":", 1)[1] if ref.startswith("stage:") else run_name(ref)
        policy = load_policy(pipeline.model_path(ref)).eval()
        log.info("evaluating %s against %s on %d prompts", ref, base_path, len(prompts))
        results[stage_name] = evaluate_policy(
            policy, base, tokenizer, prompts, judge=judge, prompt_tags=tags,
            max_new_tokens=fields.get("max_new_tokens", 128), progress=True,
            # Decoding a 135M model on CPU is per-step overhead bound: wide batches amortise it.
            batch_size=fields.get("batch_size", 32),
        )
        trained = pipeline.results.get(stage_name, {}).get("config", {})
        ablation.append({
            "policy": stage_name,
            "beta": trained.get("beta"),
            "win_rate": results[stage_name]["win_rate"]["win_rate"] if results[stage_name]["win_rate"] else None,
            "kl": (results[stage_name].get("kl") or {}).get("k3"),
        })
    (out / "eval.json").write_text(json.dumps(results, indent=2))
    return {"eval_results": results, "policies": list(results), "ablation": ablation if len(ablation) > 1 else None}
