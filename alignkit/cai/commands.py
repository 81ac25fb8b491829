"""``alignkit cai revise`` and ``alignkit cai label``: the two data-making steps of Constitutional AI.

    alignkit cai revise --model smollm2-135m-instruct --prompts hhh:train --rounds 1 --output runs/cai/revisions.jsonl
    alignkit cai label  --model runs/cai/sft/model --judge http://127.0.0.1:8000/v1 --output runs/cai/pairs.jsonl

``--critic`` / ``--judge`` name a chat model (run directory, alias) or an OpenAI-compatible endpoint
(``http://host/v1[#model]``, key from ``--api-key-env``); by default the policy critiques itself.
Each writes JSONL rows that ``alignkit sft`` / ``alignkit dpo --data FILE`` read as they are, and
``FILE.stats.json`` beside it with what was counted (ties, unparseable verdicts, unchanged revisions).
"""

from __future__ import annotations

import json
from pathlib import Path

import click


def _prompts(spec: str, limit: int | None, seed: int = 0) -> list[list[dict]]:
    """The prompts of ``spec`` as chat messages; ``limit``: a seeded random sample of that many."""
    from alignkit.eval.stage import load_prompts

    return load_prompts(spec, limit, seed)[0]


def _backends(model: str, other: str | None, api_key_env: str | None, cache_dir: Path):
    from alignkit.judges.chat import LocalChat
    from alignkit.judges.spec import chat_backend

    policy = LocalChat.load(model)
    if other is None or other == model:
        return policy, policy
    return policy, chat_backend(other, api_key_env=api_key_env, cache_dir=cache_dir)


def _write(rows: list[dict], stats: dict, output: str) -> None:
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    Path(f"{output}.stats.json").write_text(json.dumps(stats, indent=2))
    click.echo(f"{len(rows)} rows -> {path} ({json.dumps(stats)})")


_common = [
    click.option("--model", default="smollm2-135m-instruct", show_default=True, help="The policy: run directory, LoRA adapter or alias."),
    click.option("--prompts", default="hhh:train", show_default=True, help="Prompt or preference file, or a bundled dataset spec."),
    click.option("--limit", type=int, help="Use a seeded random sample of N prompts."),
    click.option("--constitution", default="hhh", show_default=True, help="A bundled constitution name or a YAML file."),
    click.option("--api-key-env", help="Environment variable holding the critic / judge endpoint's API key."),
    click.option("--max-tokens", type=int, default=128, show_default=True),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--output", required=True, help="JSONL file to write."),
]


def _with_common(fn):
    for option in reversed(_common):
        fn = option(fn)
    return fn


@click.group()
def cai() -> None:
    """Constitutional AI: critique → revision SFT data, and RLAIF preference pairs."""


@cai.command()
@_with_common
@click.option("--critic", help="The critic chat model or endpoint (default: the policy itself).")
@click.option("--rounds", type=int, default=1, show_default=True, help="Critique → revision rounds per prompt.")
def revise(model, prompts, limit, constitution, api_key_env, max_tokens, seed, output, critic, rounds) -> None:
    """Answer, critique against a principle, revise (ROUNDS times); write the revisions as SFT rows."""
    from alignkit.cai.constitution import load_constitution
    from alignkit.cai.revise import critique_revise

    loaded = load_constitution(constitution)
    policy, critic_backend = _backends(model, critic, api_key_env, Path(output).parent / "chat-cache")
    rows, stats = critique_revise(policy, critic_backend, _prompts(prompts, limit), loaded, rounds=rounds,
                                  max_tokens=max_tokens, seed=seed)
    _write(rows, {**stats, "constitution": loaded.name, "critic": critic_backend.name}, output)


@cai.command()
@_with_common
@click.option("--judge", help="The chat model or endpoint that judges against the constitution (default: the policy itself).")
@click.option("--temperature", type=float, default=1.0, show_default=True, help="Sampling temperature of the two responses.")
def label(model, prompts, limit, constitution, api_key_env, max_tokens, seed, output, judge, temperature) -> None:
    """Sample two responses per prompt; the constitution judge (both orders) picks; write preference pairs."""
    from alignkit.cai.constitution import load_constitution
    from alignkit.cai.label import label_pairs
    from alignkit.judges.constitution import ConstitutionJudge

    loaded = load_constitution(constitution)
    policy, judge_backend = _backends(model, judge, api_key_env, Path(output).parent / "chat-cache")
    constitution_judge = ConstitutionJudge(judge_backend, loaded)
    rows, stats = label_pairs(policy, constitution_judge, _prompts(prompts, limit), max_tokens=max_tokens,
                              temperature=temperature, seed=seed)
    _write(rows, {**stats, "constitution": loaded.name, "judge": judge_backend.name}, output)
