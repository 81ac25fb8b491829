"""Critique → revision (Bai et al. 2022, "Constitutional AI", §3): the supervised half of CAI.

Per prompt, the policy answers; then for each of ``rounds`` rounds a principle is picked (rotating
through the constitution, starting at a seeded random offset per prompt) and the critic model is
asked, in the same conversation:

    user: PROMPT                 assistant: RESPONSE
    user: principle.critique     assistant: CRITIQUE
    user: principle.revision     assistant: REVISION   → the next round's RESPONSE

The last revision is the SFT target: one row per prompt in TRL's conversational prompt-completion
shape, ``{"prompt": [...], "completion": [{"role": "assistant", ...}], "cai": {...}}``, the initial
answer, every critique and the principles used kept beside it. An empty revision (or a backend
that gave no reply) keeps the previous response, and is counted; a prompt left with an empty
response is dropped (counted), since the SFT reader rightly refuses empty replies.
"""

from __future__ import annotations

import random


def critique_revise(policy, critic, prompts: list[list[dict]], constitution, *, rounds: int = 1, max_tokens: int = 128,
                    critique_max_tokens: int = 96, seed: int = 0) -> tuple[list[dict], dict]:
    """(rows, stats). ``policy`` and ``critic`` are chat backends (``alignkit.judges.chat``); they may be the same."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    principles = constitution.principles
    rng = random.Random(seed)
    offsets = [rng.randrange(len(principles)) for _ in prompts]
    initial = [r or "" for r in policy.chat(prompts, max_tokens=max_tokens, temperature=0.0, seed=seed)]
    responses = list(initial)
    trace = [{"principles": [], "critiques": [], "revisions": []} for _ in prompts]
    kept_previous = 0
    for round_ in range(rounds):
        chosen = [principles[(offsets[i] + round_) % len(principles)] for i in range(len(prompts))]
        critique_convs = [prompt + [{"role": "assistant", "content": response}, {"role": "user", "content": p.critique}]
                          for prompt, response, p in zip(prompts, responses, chosen)]
        critiques = [c or "" for c in critic.chat(critique_convs, max_tokens=critique_max_tokens, temperature=0.0, seed=seed)]
        revision_convs = [conv + [{"role": "assistant", "content": c}, {"role": "user", "content": p.revision}]
                          for conv, c, p in zip(critique_convs, critiques, chosen)]
        revisions = critic.chat(revision_convs, max_tokens=max_tokens, temperature=0.0, seed=seed)
        for i, (p, c, r) in enumerate(zip(chosen, critiques, revisions)):
            trace[i]["principles"].append(p.name)
            trace[i]["critiques"].append(c)
            trace[i]["revisions"].append(r)
            if r and r.strip():
                responses[i] = r.strip()
            else:
                kept_previous += 1
    # A row with nothing to learn from (no answer and no revision) is dropped and counted.
    rows = [{"prompt": prompt, "completion": [{"role": "assistant", "content": response}],
             "cai": {"initial": first, **t}}
            for prompt, response, first, t in zip(prompts, responses, initial, trace) if response.strip()]
    stats = {"prompts": len(prompts), "rounds": rounds, "empty_revisions_kept_previous": kept_previous,
             "changed": sum(r != first for r, first in zip(responses, initial)),
             "empty_dropped": len(prompts) - len(rows)}
    return rows, stats
