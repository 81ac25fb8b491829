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
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import Field, model_validator

from alignkit.models.logprobs import response_token_logps
from alignkit.train.config import RunConfig

log = logging.getLogger(__name__)


class OnlineConfig(RunConfig):
    """Settings every method that samples from its policy shares: prompts, rewards, sampling, the engine."""

    prompts: str | None = None
    """Prompts (JSONL/JSON/CSV/Parquet: `prompt` and any columns the rewards read) or a bundled name (`arith`, `constraints`, `reviews`); default: `data`."""
    reward: list[str] = []
    """Rewards: names in alignkit.rewards.REWARD_FUNCTIONS, `module:function` (TRL's protocol), or a reward-model run directory."""
    reward_weights: list[float] = []
    """One weight per reward, in order (default: 1 each)."""
    max_new_tokens: int = Field(128, ge=1)
    """Longest completion sampled (tokens)."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature of the rollouts."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling of the rollouts (1: off)."""
    top_k: int = Field(0, ge=0)
    """Top-k sampling of the rollouts (0: off)."""
    rollout_backend: Literal["auto", "static", "hf", "vllm"] = "auto"
    """Rollout engine: auto = vLLM on CUDA when installed, the static-cache CPU engine for Llama-family models, else HF generate."""
    rollout_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Engine dtype: auto = bf16 where this machine runs it measurably faster (the mismatch is then corrected)."""
    rollout_batch: int = Field(64, ge=1)
    """Sequences the engine decodes at once."""
    eval_limit: int | None = Field(None, ge=1)
    """Held-out prompts scored per evaluation (default: all of eval_data)."""
    eval_temperature: float = Field(0.0, ge=0)
    """Sampling temperature for held-out evaluation (0: greedy)."""

    @model_validator(mode="after")
    def _check_rewards(self):
        if not self.reward:
            raise ValueError("name at least one reward")
        if self.reward_weights and len(self.reward_weights) != len(self.reward):
            raise ValueError(f"{len(self.reward_weights)} reward_weights for {len(self.reward)} rewards")
        if self.max_completion_length is not None:  # it cuts dataset responses; an online method has none
            raise ValueError("max_completion_length cuts the responses of a dataset; sampled completions are capped by max_new_tokens")
        return self


def load_run_prompts(cfg: OnlineConfig, tokenizer) -> tuple[list["PromptRow"], list["PromptRow"]]:
    """The run's training prompts (``prompts`` or ``data``, sampled to ``max_examples``) and held-out prompts."""
    from alignkit.train.setup import sample_examples

    spec = cfg.prompts or cfg.data
    if spec is None:
        raise ValueError("no prompts: pass --prompts FILE (or a bundled name: arith, constraints, reviews)")
    max_prompt = cfg.max_prompt_length or cfg.max_length // 2
    train = sample_examples(load_prompts(spec, tokenizer, max_prompt_length=max_prompt, skip_invalid=cfg.skip_invalid), cfg)
    evaluation = load_prompts(cfg.eval_data, tokenizer, max_prompt_length=max_prompt) if cfg.eval_data else []
    return train, evaluation


def make_rollout_engine(model, tokenizer, cfg: OnlineConfig):
    from alignkit.rollout import make_engine

    dtype = cfg.rollout_dtype if cfg.rollout_dtype == "auto" else getattr(torch, cfg.rollout_dtype)
    return make_engine(model, tokenizer, backend=cfg.rollout_backend, max_batch=cfg.rollout_batch, dtype=dtype)


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


def prompt_at(items: Sequence[PromptRow], position: int, seed: int) -> PromptRow:
    """Prompt number ``position`` of the stream: epoch after epoch, each a seeded permutation."""
    from alignkit.train.loop import epoch_order

    epoch, index = divmod(position, len(items))
    return items[epoch_order(len(items), epoch, seed)[index]]


def sample_and_reward(engine, rewards, prompts: Sequence[PromptRow], *, n: int, cfg: OnlineConfig, seed: int,
                      timings: dict[str, float] | None = None, held_out: bool = False):
    """``n`` samples of each prompt and their rewards: ``(Rollouts, RewardResult)``; the seconds spent
    are added to ``timings["time/generate"]`` and ``timings["time/reward"]``. ``held_out``: sampled
    as evaluation is (``eval_temperature``, no top-p / top-k truncation)."""
    timings = {} if timings is None else timings
    sampling = (dict(temperature=cfg.eval_temperature) if held_out
                else dict(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k))
    start = time.perf_counter()
    rollouts = engine.generate([p.prompt_ids for p in prompts], n=n, max_new_tokens=cfg.max_new_tokens, seed=seed, **sampling)
    timings["time/generate"] = timings.get("time/generate", 0.0) + time.perf_counter() - start
    start = time.perf_counter()
    result = rewards(
        prompts=[prompts[i].prompt for i in rollouts.prompt_index],
        completions=[completion_for_reward(prompts[i].prompt, t) for i, t in zip(rollouts.prompt_index, rollouts.texts)],
        completion_ids=rollouts.completion_ids, **reward_columns(prompts, rollouts.prompt_index))
    timings["time/reward"] = timings.get("time/reward", 0.0) + time.perf_counter() - start
    return rollouts, result


def merge_reward_results(results: Sequence, rewards):
    """One ``RewardResult`` of several batches scored by the same ``RewardSet``."""
    from alignkit.rewards.combine import RewardResult

    names = list(rewards.functions)
    return RewardResult(
        total=[v for r in results for v in r.total],
        per_function={name: [v for r in results for v in r.per_function[name]] for name in names},
        weights=rewards.weights,
        not_applicable={name: sum(r.not_applicable.get(name, 0) for r in results) for name in names},
        non_finite={name: sum(r.non_finite.get(name, 0) for r in results) for name in names},
        unscored_rows=sum(r.unscored_rows for r in results),
    )


def reward_columns(prompts: Sequence[PromptRow], prompt_index: Sequence[int]) -> dict[str, list]:
    """Every column of the prompts, one value per completion row (None where a prompt lacks it)."""
    names = sorted({name for row in prompts for name in row.columns})
    return {name: [prompts[i].columns.get(name) for i in prompt_index] for name in names}


def completion_for_reward(prompt: Any, text: str):
    """TRL's shapes: a chat prompt gets ``[{"role": "assistant", "content": text}]``, a text prompt the text."""
    return [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text


def resolve_reward(name: str):
    """A reward function from a name in ``REWARD_FUNCTIONS``, an import path ``module:function``, or
    a directory: a reward model saved by ``alignkit rm`` (the run directory or its ``model/``; an
    ``--ensemble`` run's ``member-*`` models become a mean ``RewardEnsemble``)."""
    from alignkit.rewards import RewardEnsemble, RewardModelReward, get_reward_function

    path = Path(name)
    if path.is_dir():
        members = sorted(path.glob("member-*/model")) or [path / "model" if (path / "model").is_dir() else path]
        missing = [str(m) for m in members if not (m / "config.json").exists()]
        if missing:
            raise ValueError(f"--reward {name}: {missing[0]} has no config.json (not a reward model saved by alignkit rm)")
        loaded = [RewardModelReward.from_pretrained(m) for m in members]
        return loaded[0] if len(loaded) == 1 else RewardEnsemble(loaded, reduce="mean")
    if ":" in name:
        module, _, attribute = name.partition(":")
        return getattr(importlib.import_module(module), attribute)
    return get_reward_function(name)


def reward_log_name(name: str) -> str:
    """How rewards/<name>/... is logged: the table's name, the function's for an import path, the run's for a directory."""
    path = Path(name)
    if path.is_dir():
        return path.parent.name if path.name == "model" else path.name
    return name.rpartition(":")[2]


def build_reward_set(names: Sequence[str], weights: Sequence[float], extra: dict[str, tuple[Any, float]] | None = None):
    """The named rewards (weights in order, default 1 each) and ``extra`` functions built in code,
    ``{name: (function, weight)}`` (online DPO's judge)."""
    from alignkit.rewards import RewardSet

    functions = {reward_log_name(name): resolve_reward(name) for name in names}
    all_weights = dict(zip(functions, weights or [1.0] * len(functions)))
    for name, (function, weight) in (extra or {}).items():
        functions[name], all_weights[name] = function, weight
    return RewardSet(functions, weights=all_weights)


@dataclass
class RolloutRow:
    """One sampled completion, ready to train on. Per-token lists are over the completion tokens."""

    prompt_ids: list[int]
    completion_ids: list[int]
    sampling_logps: list[float]  # the engine's log-probs (log softmax(logits / T))
    advantage: float  # the sequence's (GRPO, RLOO); PPO's are per token, in token_advantages
    old_logps: list[float] | None = None  # the trainer's π_old, when recomputed
    ref_logps: list[float] | None = None  # the reference's, when a KL term needs them
    token_advantages: list[float] | None = None  # per-token advantages (PPO's GAE)
    returns: list[float] | None = None  # per-token value targets (PPO)
    old_values: list[float] | None = None  # the value model's estimates when sampled (PPO's value clipping)


ROW_LISTS = ("prompt_ids", "completion_ids", "sampling_logps", "old_logps", "ref_logps", "token_advantages", "returns",
             "old_values")
PER_TOKEN = ROW_LISTS[2:]  # the lists that are one value per completion token


def collate_rows(rows: Sequence[RolloutRow], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors, each (R, T) with T = longest prompt + completion (as ``Rollouts.to_batch``):
    input_ids, attention_mask, response_mask, sampling_logps, and each other per-token list
    (old_logps, ref_logps, token_advantages, returns, old_values) that every row has (values sit at
    the completion positions, 0 elsewhere); advantages (R,)."""
    width = max((len(r.prompt_ids) + len(r.completion_ids) for r in rows), default=0)
    batch = {
        "input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros(len(rows), width, dtype=torch.long),
        "response_mask": torch.zeros(len(rows), width, dtype=torch.long),
        "advantages": torch.tensor([r.advantage for r in rows], dtype=torch.float32),
    }
    per_token = [name for name in PER_TOKEN if rows and all(getattr(r, name) is not None for r in rows)]
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
    rows per forward. A sharded model's processes may hold different numbers of rows but must run
    as many forwards as each other (``sharding.forward_count``): one with none left runs idle ones."""
    from alignkit.models.logprobs import idle_forward
    from alignkit.models.sharding import forward_count

    device = next(model.parameters()).device
    out = []
    for start in range(0, forward_count(model, math.ceil(len(rows) / batch_size)) * batch_size, batch_size):
        chunk = rows[start : start + batch_size]
        if not chunk:
            idle_forward(model)
            continue
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


# --- the rollout buffer: one round's rows, served over several optimizer steps ----------------------
# A method keeps ``round`` (the round its ``rows`` came from), ``cursor`` (prompts drawn so far),
# ``rows``, ``round_metrics``, ``buffer_world`` (processes that shared the round) and ``fill(round, topo)``.


def empty_buffer(method) -> None:
    """No round yet: the state ``round_items`` fills, and ``pending`` (a round's timings, logged once)."""
    method.round, method.cursor, method.rows, method.round_metrics = -1, 0, [], {}
    method.buffer_world = 1
    method.pending = {}


def response_token_totals(batch) -> dict[str, float]:
    """A method's ``batch_totals``: completion tokens (a token mean divides by the global batch's count)."""
    return {"tokens": float(batch["response_mask"].sum())}


def round_items(method, step: int, topo, *, parts: int, passes: int) -> list[RolloutRow]:
    """This process's rows for optimizer step ``step``: the round's buffer (filled when the round
    starts), shuffled per pass, its ``k``-th of ``parts`` parts; a round is ``parts × passes`` steps."""
    from alignkit.train.loop import split_items

    round_index, k = divmod(step, parts * passes)
    if round_index != method.round:
        method.fill(round_index, topo)
    elif method.buffer_world != topo.world:
        raise ValueError(f"resuming in the middle of a round needs each process's buffer, and the checkpoint holds "
                         f"rank 0's of {method.buffer_world}: with several processes, checkpoint at round boundaries "
                         f"(save_every a multiple of the {parts * passes} steps of a round)")
    pass_index, part = divmod(k, parts)
    generator = torch.Generator().manual_seed(round_seed(method.cfg.seed, round_index, pass_index, 7))
    order = torch.randperm(len(method.rows), generator=generator).tolist()
    return split_items([method.rows[i] for i in order], parts)[part]


def buffer_state(method, rows: Sequence[RolloutRow] | None = None) -> dict:
    """The buffer and the prompt stream's position: resuming mid-round trains on the same rows.
    ``rows``: the buffer as rollout rows, when the method keeps it in another shape (online DPO: pairs)."""
    return {"round": method.round, "cursor": method.cursor, "rows": rows_to_state(method.rows if rows is None else rows),
            "round_metrics": dict(method.round_metrics), "world": method.buffer_world}


def load_buffer_state(method, state: dict) -> None:
    method.round, method.cursor, method.buffer_world = int(state["round"]), int(state["cursor"]), int(state["world"])
    method.rows, method.round_metrics = rows_from_state(state["rows"]), dict(state["round_metrics"])
