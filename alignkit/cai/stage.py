"""The ``cai-revise`` and ``cai-label`` recipe stages (recipes/cai.yaml).

Each writes its JSONL under ``<output_dir>/<stage>/`` and returns ``{"path": FILE, ...counts}``,
so a later stage's ``data: stage:NAME`` reads it (``Pipeline.model_path`` resolves a stage's
``path``). Fields:

    cai-revise  model (default base), critic (default: the model), prompts, limit, rounds,
                constitution, max_tokens, seed, api_key_env
    cai-label   model, judge (default: the model), prompts, limit, constitution, max_tokens,
                temperature, seed, api_key_env

``critic`` / ``judge``: a model reference (``base``, ``stage:sft``, a path) or an endpoint URL
(``http://127.0.0.1:8000/v1``, e.g. ``alignkit serve`` of the same model).
"""

from __future__ import annotations

import json

FIELDS = {
    "cai-revise": {"model", "critic", "prompts", "limit", "rounds", "constitution", "max_tokens", "seed", "api_key_env"},
    "cai-label": {"model", "judge", "prompts", "limit", "constitution", "max_tokens", "temperature", "seed", "api_key_env"},
}


def run_cai_stage(pipeline, name: str, method: str, fields: dict) -> dict:
    from alignkit.cai.commands import _prompts
    from alignkit.cai.constitution import load_constitution
    from alignkit.judges.chat import LocalChat
    from alignkit.judges.spec import chat_backend

    unknown = set(fields) - FIELDS[method]
    if unknown:
        raise ValueError(f"stage {name!r} ({method}): unknown field(s) {sorted(unknown)}; known: {sorted(FIELDS[method])}")
    out = pipeline.out / name
    out.mkdir(parents=True, exist_ok=True)
    model = pipeline.model_path(fields.get("model"))
    other_ref = fields.get("critic" if method == "cai-revise" else "judge")
    other = other_ref if isinstance(other_ref, str) and other_ref.startswith(("http://", "https://")) else (
        pipeline.model_path(other_ref) if other_ref else model)
    policy = LocalChat.load(model)
    backend = policy if other == model else chat_backend(other, api_key_env=fields.get("api_key_env"), cache_dir=out / "chat-cache")
    constitution = load_constitution(fields.get("constitution", "hhh"))
    prompts = _prompts(fields.get("prompts") or pipeline.recipe.get("data") or "hhh:train", fields.get("limit"), fields.get("seed", 0))
    options = {k: fields[k] for k in ("max_tokens", "seed") if k in fields}
    if method == "cai-revise":
        from alignkit.cai.revise import critique_revise

        rows, stats = critique_revise(policy, backend, prompts, constitution, rounds=fields.get("rounds", 1), **options)
        path = out / "revisions.jsonl"
    else:
        from alignkit.cai.label import label_pairs
        from alignkit.judges.constitution import ConstitutionJudge

        judge = ConstitutionJudge(backend, constitution)
        rows, stats = label_pairs(policy, judge, prompts, temperature=fields.get("temperature", 1.0), **options)
        path = out / "pairs.jsonl"
    if not rows:
        raise ValueError(f"stage {name!r} ({method}) produced no rows: {json.dumps(stats)}")
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return {"path": str(path), "rows": len(rows), "stats": stats, "by": backend.name}
