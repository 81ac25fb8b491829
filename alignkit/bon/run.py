"""Best-of-N sampling: N completions per prompt from the rollout engine, one kept by a scorer.

    prompts ──► engine.generate(n=N) ──► scorer (reward fn / reward model / PRM / verifier / vote)
            ──► the best of each prompt's N ──► SFT rows (TRL's prompt-completion shape)

Scorers (``resolve_scorer``): ``majority`` (vote over final answers, no model), a reward name
from ``alignkit.rewards.REWARD_FUNCTIONS`` (``math`` is the verifier), ``module:function`` (TRL's
protocol), or a directory: a model saved by ``alignkit prm`` (per-step scores aggregated by
``aggregate``: min for a PRM) or by ``alignkit rm`` (a scalar reward model).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from alignkit.bon.selection import best_index, extract_answer, majority_index

log = logging.getLogger(__name__)


def resolve_scorer(spec: str, *, aggregate: str | None = None):
    """A reward function for ``spec``, or the string ``"majority"`` (selection by vote)."""
    if spec == "majority":
        return spec
    path = Path(spec)
    if path.is_dir() and ((path / "prm.json").exists() or (path / "model" / "prm.json").exists()):
        from alignkit.rewards.process import ProcessRewardModel

        return ProcessRewardModel.from_pretrained(path, aggregate=aggregate)
    from alignkit.train.online import resolve_reward

    return resolve_reward(spec)


@dataclass
class Choice:
    """One prompt's N samples, their scores, and which one was kept (None: none could be)."""

    prompt: Any
    columns: dict
    texts: list[str]
    scores: list[float | None]
    chosen: int | None


def score_samples(scorer, prompts: Sequence, texts: Sequence[str], columns: dict[str, list]) -> list[float | None]:
    """Each sample's score under a reward function (TRL's protocol: chat prompts get chat completions)."""
    from alignkit.rewards.protocol import call_reward
    from alignkit.train.online import completion_for_reward

    completions = [completion_for_reward(p, t) for p, t in zip(prompts, texts)]
    return call_reward(scorer, list(prompts), completions, None, **columns)


def choose(scorer, scores: list[float | None], texts: list[str]) -> int | None:
    return majority_index([extract_answer(t) for t in texts]) if scorer == "majority" else best_index(scores)


def best_of_n(engine, scorer, prompts: Sequence, *, n: int, max_new_tokens: int = 128, temperature: float = 1.0,
              top_p: float = 1.0, seed: int = 0, chunk: int = 16) -> list[Choice]:
    """``n`` samples of each prompt (``PromptRow``s), scored and the best chosen, ``chunk`` prompts
    per generation call (the engine batches their n·chunk rows)."""
    from alignkit.train.online import reward_columns

    choices = []
    for start in range(0, len(prompts), chunk):
        part = prompts[start : start + chunk]
        rollouts = engine.generate([p.prompt_ids for p in part], n=n, max_new_tokens=max_new_tokens,
                                   temperature=temperature, top_p=top_p, seed=seed + start)
        rows = rollouts.prompt_index
        scores = ([None] * len(rows) if scorer == "majority" else
                  score_samples(scorer, [part[i].prompt for i in rows], rollouts.texts, reward_columns(part, rows)))
        for k, row in enumerate(part):
            texts, row_scores = rollouts.texts[k * n : (k + 1) * n], scores[k * n : (k + 1) * n]
            choices.append(Choice(row.prompt, row.columns, texts, row_scores, choose(scorer, row_scores, texts)))
    return choices


def sft_rows(choices: Sequence[Choice], *, min_score: float | None = None) -> list[dict]:
    """The kept samples as SFT rows: ``prompt`` as given, ``completion`` in the prompt's shape (an
    assistant message for chat prompts), ``score`` and ``n``, and the prompt's other columns.
    Prompts with no choice, or a best score below ``min_score``, are left out (rejection)."""
    from alignkit.train.online import completion_for_reward

    rows = []
    for c in choices:
        if c.chosen is None or (min_score is not None and (c.scores[c.chosen] is None or c.scores[c.chosen] < min_score)):
            continue
        extra = {k: v for k, v in c.columns.items() if v is not None and k not in ("prompt", "completion", "score", "n")}
        rows.append({"prompt": c.prompt, "completion": completion_for_reward(c.prompt, c.texts[c.chosen]),
                     "score": c.scores[c.chosen], "n": len(c.texts), **extra})
    return rows


def write_jsonl(rows: Sequence[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path
