"""Online / iterative DPO (Guo et al. 2024, "Direct Language Model Alignment from Online AI
Feedback"; Xu et al. 2023, iterative DPO; Yuan et al. 2024, self-rewarding): DPO on pairs the
current policy samples and a reward function, reward model or judge labels, round after round.

A round, every ``steps_per_round`` optimizer steps::

    P prompts ──► engine: n samples each (n = num_generations ≥ 2)       P = batch_size · steps_per_round
              ──► labels: reward functions / a reward model (--reward) and/or a pairwise judge
                  (--judge: round robin in both orders, judges/round_robin.py), weighted and summed
              ──► per prompt the best and the worst sample by that label form a pair;
                  a prompt whose samples all score alike (or unscored) gives none, counted
              ──► reference log-probs of both sides (a frozen copy, or the LoRA-disabled base)
    then steps: a shuffled 1/steps_per_round of the round's pairs each, scored and lost exactly as
    offline DPO (train/dpo.py: packed pair log-probs, any loss of losses.PREFERENCE_LOSSES).

The reference stays the starting policy (Guo et al.). The loop (train/loop.py) does the rest:
accumulation, clipping, the fault guard (a NaN reward stops before the optimizer step),
checkpoints with the round's pairs in them (resume is exact), logging.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator

from alignkit.data.chat import EncodedPair
from alignkit.train.dpo import DPOConfig, DPOMethod, PairItem
from alignkit.train.online import (
    OnlineConfig,
    PromptRow,
    RolloutRow,
    buffer_state,
    build_reward_set,
    completion_logps,
    load_buffer_state,
    load_run_prompts,
    make_rollout_engine,
    prompt_at,
    round_items,
    round_seed,
    sample_and_reward,
)


class OnlineDPOConfig(OnlineConfig, DPOConfig):
    """An online DPO run: the DPO settings (loss, beta, ...) on pairs sampled from the policy each round."""

    reward: list[str] = []
    """Labels: names in alignkit.rewards.REWARD_FUNCTIONS, `module:function` (TRL's protocol), or a reward-model run directory."""
    judge: str | None = None
    """A pairwise judge that labels too (an --judge spec: chat model, http://host/v1 endpoint, constitution:SPEC, rm:DIR)."""
    judge_weight: float = 1.0
    """Weight of the judge's round-robin win rate in the label (added to the weighted rewards)."""
    judge_api_key_env: str | None = None
    """Environment variable holding the judge endpoint's API key (never logged)."""
    num_generations: int = Field(2, ge=2)
    """Responses sampled per prompt; the best and the worst by label form the prompt's pair."""
    batch_size: int = Field(8, ge=1)
    """Pairs per optimizer step (fewer when prompts give no pair: their samples scored alike)."""
    steps_per_round: int = Field(1, ge=1)
    """Optimizer steps on each round's pairs before sampling again (a round samples batch_size × steps_per_round prompts)."""
    rounds: int | None = Field(None, ge=1)
    """Rounds of sample → label → DPO steps; sets max_steps = rounds × steps_per_round."""
    reference: Literal["auto", "copy", "adapter"] = "auto"
    """The reference: auto = the adapter-disabled base with LoRA (one copy of the weights), else a frozen copy."""

    @model_validator(mode="after")
    def _check_rewards(self):  # replaces OnlineConfig's: a judge alone is a label too
        if not self.reward and not self.judge:
            raise ValueError("name a reward (--reward) or a judge (--judge) to label the samples")
        if self.reward_weights and len(self.reward_weights) != len(self.reward):
            raise ValueError(f"{len(self.reward_weights)} reward_weights for {len(self.reward)} rewards")
        if self.rounds is not None:
            if self.max_steps is not None and self.max_steps != self.rounds * self.steps_per_round:
                raise ValueError(f"max_steps={self.max_steps} contradicts rounds={self.rounds} × steps_per_round={self.steps_per_round}")
            self.max_steps = self.rounds * self.steps_per_round
        return self


def best_worst_pairs(labels: list[float | None], group_size: int) -> list[tuple[int, int] | None]:
    """Per prompt (rows ``g·n .. g·n + n − 1``), the rows (best, worst) by label; None when fewer
    than two samples have a label or the best and worst labels are equal (no preference to learn).
    Ties for best or worst go to the earlier row."""
    pairs = []
    for start in range(0, len(labels), group_size):
        scored = [r for r in range(start, start + group_size) if labels[r] is not None]
        best = max(scored, key=lambda r: labels[r], default=None)
        worst = min(scored, key=lambda r: labels[r], default=None)
        pairs.append((best, worst) if best is not None and labels[best] != labels[worst] else None)
    return pairs


def row_labels(result) -> list[float | None]:
    """The weighted total of each row, None where no reward or judge gave a usable value."""
    usable = [any(v is not None and math.isfinite(v) for v in values)
              for values in zip(*result.per_function.values())]
    return [total if ok else None for total, ok in zip(result.total, usable)]


@dataclass
class OnlineDPOMethod:
    cfg: OnlineDPOConfig
    model: torch.nn.Module
    tokenizer: object
    train_items: list[PromptRow]  # the prompts (the loop reads only their count)
    eval_items: list[PromptRow] = field(default_factory=list)
    judge: object | None = None  # a PairwiseJudge (built from cfg.judge by build_online_dpo)

    def __post_init__(self):
        from alignkit.judges.round_robin import RoundRobinJudgeReward
        from alignkit.train.lora import is_peft
        from alignkit.train.reference import Reference

        cfg = self.cfg
        self.judge_reward = RoundRobinJudgeReward(self.judge, cfg.num_generations) if self.judge is not None else None
        extra = {"judge": (self.judge_reward, cfg.judge_weight)} if self.judge_reward else None
        self.rewards = build_reward_set(cfg.reward, cfg.reward_weights, extra)
        self.prompts_per_round = cfg.batch_size * cfg.steps_per_round
        if len(self.train_items) < self.prompts_per_round:
            raise ValueError(f"{len(self.train_items)} prompts is fewer than one round of {self.prompts_per_round}")
        self.steps_per_epoch = len(self.train_items) // self.prompts_per_round * cfg.steps_per_round
        self.engine = make_rollout_engine(self.model, self.tokenizer, cfg)
        # Offline DPO's scoring and loss, with every pair's reference sums cached when it is sampled.
        self.dpo = DPOMethod(cfg.model_copy(update={"reference": "precompute"}), self.model, self.tokenizer, [])
        self.reference = None
        if self.dpo.spec.needs_reference:
            mode = cfg.reference if cfg.reference != "auto" else ("adapter" if is_peft(self.model) else "copy")
            self.reference = Reference(mode, self.model, lambda model, rows: completion_logps(model, rows, self.pad_id))
        # The round's pairs (chosen row, rejected row) and the prompt stream: the checkpointed state.
        self.round, self.cursor, self.rows, self.round_metrics = -1, 0, [], {}
        self.buffer_world = 1
        self.pending: dict[str, float] = {}

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    # --- a round: sample, label, pair -----------------------------------------------------------

    def step_items(self, step: int, topo) -> list[tuple[RolloutRow, RolloutRow]]:
        return round_items(self, step, topo, parts=self.cfg.steps_per_round, passes=1)

    def fill(self, round_index: int, topo) -> None:
        cfg, n, timings = self.cfg, self.cfg.num_generations, {"time/generate": 0.0, "time/reward": 0.0, "time/score": 0.0}
        start = time.perf_counter()
        self.engine.load_weights(self.model)
        timings["time/generate"] += time.perf_counter() - start
        per_process = self.prompts_per_round // topo.world
        prompts = [prompt_at(self.train_items, self.cursor + topo.rank * per_process + i, cfg.seed) for i in range(per_process)]
        self.cursor += per_process * topo.world
        unparseable = self.judge_reward.unparseable if self.judge_reward else 0
        rollouts, result = sample_and_reward(self.engine, self.rewards, prompts, n=n, cfg=cfg, timings=timings,
                                             seed=round_seed(cfg.seed, round_index, 0, topo.rank))
        labels = row_labels(result)

        def row(r: int) -> RolloutRow:  # the advantage field keeps the row's label (logged as the pairs' gap)
            return RolloutRow(rollouts.prompt_ids[r], rollouts.completion_ids[r], rollouts.logprobs[r], labels[r])

        pairs = [(row(best), row(worst)) for best, worst in filter(None, best_worst_pairs(labels, n))]
        start = time.perf_counter()
        if self.reference is not None:  # with no pairs too: a sharded reference's forwards are collective
            flat = [row for pair in pairs for row in pair]
            for row, logps in zip(flat, self.reference.logps(flat)):
                row.ref_logps = logps
        timings["time/score"] += time.perf_counter() - start
        lengths = [len(c) for c in rollouts.completion_ids]
        self.round, self.rows, self.buffer_world = round_index, pairs, topo.world
        self.round_metrics = {
            **result.metrics(),
            "pairs": float(len(pairs)),
            "pairs/no_preference": float(len(prompts) - len(pairs)),  # samples scored alike, or unscored
            "pairs/label_gap": sum(c.advantage - r.advantage for c, r in pairs) / max(len(pairs), 1),
            "completion_length": sum(lengths) / max(len(lengths), 1),
            "completions/truncated": rollouts.finish_reasons.count("length") / max(len(lengths), 1),
        }
        if self.judge_reward:
            self.round_metrics["judge/unparseable"] = float(self.judge_reward.unparseable - unparseable)
        self.pending = timings

    # --- the loss: offline DPO's, on this round's pairs ---------------------------------------

    def collate(self, pairs: list[tuple[RolloutRow, RolloutRow]]) -> dict:
        if not pairs:
            return {}
        items = [PairItem(EncodedPair(c.prompt_ids, c.completion_ids, r.completion_ids),
                          (sum(c.ref_logps), sum(r.ref_logps)) if c.ref_logps is not None else None) for c, r in pairs]
        return self.dpo.collate(items)

    def batch_totals(self, batch) -> dict[str, float]:
        return self.dpo.batch_totals(batch) if batch else {"chosen_tokens": 0.0}

    def loss(self, batch, totals: dict[str, float] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        metrics = {**self.round_metrics, **self.pending}
        self.pending = {}  # timings once per round, on the first micro-batch after it
        if not batch:  # no pair in this micro-batch: a zero from a forward, so every trainable weight gets a gradient
            from alignkit.models.logprobs import idle_forward

            return idle_forward(self.model), metrics
        loss, dpo_metrics = self.dpo.loss(batch, totals)
        return loss, {**metrics, **dpo_metrics}

    # --- evaluation and saving ------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """Held-out prompts, one sample each (greedy by default): the rewards' means and the length
        (a judge needs two samples to compare: it reports nothing here)."""
        prompts = self.eval_items[: self.cfg.eval_limit]
        if not prompts:
            return {}
        self.engine.load_weights(self.model)
        rollouts, result = sample_and_reward(self.engine, self.rewards, prompts, n=1, cfg=self.cfg, seed=self.cfg.seed,
                                             held_out=True)
        return {**result.metrics(), "completion_length": rollouts.num_tokens / len(prompts)}

    def save(self, directory: Path) -> None:
        self.dpo.save(directory)

    def state_dict(self) -> dict:
        return buffer_state(self, rows=[row for pair in self.rows for row in pair])

    def load_state_dict(self, state: dict) -> None:
        load_buffer_state(self, state)
        self.rows = list(zip(self.rows[0::2], self.rows[1::2]))


def build_online_dpo(cfg: OnlineDPOConfig) -> OnlineDPOMethod:
    from alignkit.judges.spec import load_judge
    from alignkit.train.setup import prepare_model

    model, tokenizer = prepare_model(cfg)
    judge = load_judge(cfg.judge, api_key_env=cfg.judge_api_key_env,
                       cache_dir=Path(cfg.output_dir) / "judge-cache") if cfg.judge else None
    return OnlineDPOMethod(cfg, model, tokenizer, *load_run_prompts(cfg, tokenizer), judge=judge)


def run_online_dpo(cfg: OnlineDPOConfig) -> dict:
    from alignkit.train.loop import fit

    return fit(build_online_dpo(cfg), cfg)
