"""What every online method shares: prompts, the per-round sampling seed, rollout rows, their
batches and their checkpointed form, and the reward functions named in a config.

The cycle (DESIGN.md, "Online methods"): prompts -> engine samples (with sampling log-probs) ->
reward functions -> scoring (π_old, reference) -> advantages -> optimizer steps on the rows ->
the engine takes the new weights before the next round. The loop (``train/loop.py``) asks the
method for each step's rows (``step_items``); a method refills its buffer every K steps.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from alignkit.models.logprobs import response_token_logps

log = logging.getLogger(__name__)


@dataclass
class PromptRow:
    """A training or evaluation prompt: as given (for reward functions), encoded (for the engine),
    and its other columns (``answer``, ``constraints``, ``tests``, ...) for the rewards."""

    prompt: Any  # a string or a list of chat messages
    prompt_ids: list[int]
    columns: dict = field(default_factory=dict)


def load_prompts(spec: str, tokenizer, *, max_prompt_length: int, skip_invalid: bool = False) -> list[PromptRow]:
    """Prompt rows from a file or a bundled name (``arith``, ``arith:test``), chat prompts through
    the chat template with the generation prompt; a prompt longer than ``max_prompt_length`` keeps
    its end (where the question and the assistant header are)."""
    from alignkit.data import read_records
    from alignkit.rollout import encode_prompt
    from alignkit.train.setup import data_files

    rows = []
    for path in data_files(spec):
        result = read_records(path, "prompt", skip_invalid=skip_invalid)
        if result.n_invalid:
            log.warning("skipped %d invalid rows (written to %s)", result.n_invalid, result.rejects_path)
        for record in result.records:
            ids = encode_prompt(tokenizer, record.prompt)[-max_prompt_length:]
            rows.append(PromptRow(record.prompt, ids, {"answer": record.answer, **record.meta}))
    if not rows:
        raise ValueError(f"{spec}: no prompts")
    return rows


def round_seed(*keys: int) -> int:
    """A sampling seed for one generation (config seed, round, attempt, process): a pure function
    of its keys, so a resumed run samples exactly what the uninterrupted run did."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def reward_columns(prompts: Sequence[PromptRow], prompt_index: Sequence[int]) -> dict[str, list]:
    """Every column of the prompts, one value per completion row (None where a prompt lacks it)."""
    names = sorted({name for row in prompts for name in row.columns})
    return {name: [prompts[i].columns.get(name) for i in prompt_index] for name in names}


def completion_for_reward(prompt: Any, text: str):
    """TRL's shapes: a chat prompt gets ``[{"role": "assistant", "content": text}]``, a text prompt the text."""
    return [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text


def resolve_reward(name: str):
    """A reward function from a name in ``REWARD_FUNCTIONS`` or an import path ``module:function``."""
    from alignkit.rewards import get_reward_function

    if ":" in name:
        module, _, attribute = name.partition(":")
        return getattr(importlib.import_module(module), attribute)
    return get_reward_function(name)


def build_reward_set(names: Sequence[str], weights: Sequence[float]):
    from alignkit.rewards import RewardSet

    # Logged as rewards/<name>/...: the table's name, or the function's own for an import path.
    functions = {name.rpartition(":")[2]: resolve_reward(name) for name in names}
    return RewardSet(functions, weights=list(weights) if weights else None)


@dataclass
class RolloutRow:
    """One sampled completion, ready to train on. Per-token lists are over the completion tokens."""

    prompt_ids: list[int]
    completion_ids: list[int]
    sampling_logps: list[float]  # the engine's log-probs (log softmax(logits / T))
    advantage: float
    old_logps: list[float] | None = None  # the trainer's π_old, when recomputed
    ref_logps: list[float] | None = None  # the reference's, when a KL term needs them


ROW_LISTS = ("prompt_ids", "completion_ids", "sampling_logps", "old_logps", "ref_logps")


def collate_rows(rows: Sequence[RolloutRow], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors, each (R, T) with T = longest prompt + completion (as ``Rollouts.to_batch``):
    input_ids, attention_mask, response_mask, sampling_logps, and old_logps / ref_logps when every row
    has them (log-probs sit at the completion positions, 0 elsewhere); advantages (R,)."""
    width = max((len(r.prompt_ids) + len(r.completion_ids) for r in rows), default=0)
    batch = {
        "input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros(len(rows), width, dtype=torch.long),
        "response_mask": torch.zeros(len(rows), width, dtype=torch.long),
        "advantages": torch.tensor([r.advantage for r in rows], dtype=torch.float32),
    }
    per_token = [name for name in ("sampling_logps", "old_logps", "ref_logps") if rows and all(getattr(r, name) is not None for r in rows)]
    for name in per_token:
        batch[name] = torch.zeros(len(rows), width)
    for i, row in enumerate(rows):
        start, end = len(row.prompt_ids), len(row.prompt_ids) + len(row.completion_ids)
        batch["input_ids"][i, :end] = torch.tensor(row.prompt_ids + row.completion_ids)
        batch["attention_mask"][i, :end] = 1
        batch["response_mask"][i, start:end] = 1
        for name in per_token:
            batch[name][i, start:end] = torch.tensor(getattr(row, name))
    return batch


@torch.no_grad()
def completion_logps(model, rows: Sequence[RolloutRow], pad_id: int, *, batch_size: int = 16) -> list[list[float]]:
    """Each row's completion-token log-probs under ``model`` (teacher-forced, no grad), ``batch_size``
    rows per forward."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = collate_rows(chunk, pad_id)
        token_logps = response_token_logps(model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                           batch["response_mask"].to(device)).float().cpu()
        for i, row in enumerate(chunk):
            first = len(row.prompt_ids)
            out.append(token_logps[i, first : first + len(row.completion_ids)].tolist())
    return out


def rows_to_state(rows: Sequence[RolloutRow]) -> dict:
    """Rows as flat tensors (what ``torch.load(weights_only=True)`` reads back): per list field
    the concatenated values and each row's length (-1 for None)."""
    state: dict[str, Any] = {"advantage": torch.tensor([r.advantage for r in rows], dtype=torch.float64)}
    for name in ROW_LISTS:
        values = [getattr(r, name) for r in rows]
        dtype = torch.long if name.endswith("ids") else torch.float64
        state[name] = torch.tensor([v for vs in values if vs is not None for v in vs], dtype=dtype)
        state[f"{name}:lengths"] = torch.tensor([-1 if vs is None else len(vs) for vs in values], dtype=torch.long)
    return state


def rows_from_state(state: dict) -> list[RolloutRow]:
    columns: dict[str, list] = {}
    for name in ROW_LISTS:
        flat, lengths, offset, out = state[name].tolist(), state[f"{name}:lengths"].tolist(), 0, []
        for n in lengths:
            out.append(None if n < 0 else flat[offset : offset + n])
            offset += max(n, 0)
        columns[name] = out
    return [RolloutRow(advantage=a, **{name: columns[name][i] for name in ROW_LISTS})
            for i, a in enumerate(state["advantage"].tolist())]
