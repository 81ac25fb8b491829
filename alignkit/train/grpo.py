"""GRPO / RLVR (Shao et al. 2024, DeepSeekMath; DeepSeek-R1): group-relative policy optimisation
on rewards that are checked, not learned, with the DAPO, Dr. GRPO, BNPO and GSPO variants.

A round, every ``steps_per_generation × num_iterations`` optimizer steps::

    P prompts ──► engine: G samples each (+ sampling log-probs)      P = batch_size · steps_per_generation / G
              ──► reward functions (weighted, each logged)
              ──► group advantages (r − mean) / std per prompt     losses.group_advantages
              ──► groups whose rewards are all equal: dropped, or resampled from fresh prompts
              ──► π_old (a trainer forward, when the buffer serves several steps), π_ref (if β > 0)
    then steps: a shuffled 1/steps_per_generation of the buffer each, num_iterations passes,
    the clipped loss by name (losses.grpo_loss), truncated importance weights for the engine's
    log-prob mismatch. The loop (train/loop.py) does the rest: accumulation, clipping, the NaN
    guard, checkpoints (the buffer is in them: resume is exact), logging.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator

from alignkit.losses import GRPO_LOSS_TYPES, group_advantages, grpo_loss, truncated_importance_weights
from alignkit.train.online import (
    OnlineConfig,
    PromptRow,
    RolloutRow,
    buffer_state,
    build_reward_set,
    collate_rows,
    completion_logps,
    empty_buffer,
    load_buffer_state,
    load_run_prompts,
    make_rollout_engine,
    merge_reward_results,
    prompt_at,
    response_token_totals,
    round_items,
    round_seed,
    sample_and_reward,
)

log = logging.getLogger(__name__)


class GRPOConfig(OnlineConfig):
    """A GRPO run on prompts with verifiable rewards."""

    reward: list[str] = ["math"]
    """Reward functions: names in alignkit.rewards.REWARD_FUNCTIONS or `module:function` (TRL's protocol)."""
    num_generations: int = Field(8, ge=2)
    """Completions sampled per prompt (G)."""
    batch_size: int = Field(16, ge=1)
    """Completions per optimizer step (the global batch)."""
    loss_type: Literal[tuple(GRPO_LOSS_TYPES)] = "dapo"  # the choices are the loss table's names
    """Loss variant: a name in alignkit.losses.GRPO_LOSS_TYPES (grpo, bnpo, dapo, dr_grpo, gspo)."""
    lr: float = Field(1e-6, gt=0)
    """Peak learning rate (TRL's GRPO default; raise it for LoRA)."""
    steps_per_generation: int = Field(1, ge=1)
    """Optimizer steps that share one generation batch of batch_size × steps_per_generation completions."""
    num_iterations: int = Field(1, ge=1)
    """Passes (μ) over each generation batch; after the first, the clipped ratio to π_old matters."""
    epsilon: float = Field(0.2, gt=0)
    """Lower clip range ε_low of the ratio (GSPO: 3e-4)."""
    epsilon_high: float | None = Field(None, gt=0)
    """Upper clip range ε_high (DAPO's clip-higher: 0.28; GSPO: 4e-4); default: epsilon."""
    beta: float = Field(0.0, ge=0)
    """Coefficient of the k3 KL to the reference (0: no reference model, as current practice; DeepSeekMath: 0.04)."""
    reference: Literal["auto", "copy", "adapter"] = "auto"
    """The reference when beta > 0: auto = the adapter-disabled base with LoRA, else a frozen copy."""
    scale_rewards: bool = True
    """Divide advantages by the group's reward std (off: Dr. GRPO's mean-only advantages)."""
    zero_signal: Literal["keep", "drop", "resample"] = "drop"
    """Groups whose rewards are all equal (zero advantage): keep, drop from the buffer, or replace from fresh prompts (DAPO)."""
    resample_attempts: int = Field(2, ge=1)
    """With zero_signal=resample: extra generations per round at most."""
    old_logps: Literal["trainer", "sampling"] = "trainer"
    """π_old: the trainer's log-probs (with a truncated importance weight for the engine's mismatch) or the engine's own."""
    is_cap: float | None = Field(3.0, gt=0)
    """Truncation C of the importance weight min(π_old/π_sampling, C) (TRL's default 3.0; none: no correction)."""

    @model_validator(mode="after")
    def _check_grpo(self):
        generation = self.batch_size * self.steps_per_generation
        if generation % self.num_generations:
            raise ValueError(f"batch_size × steps_per_generation = {generation} completions must be a multiple of "
                             f"num_generations={self.num_generations}")
        return self


def _normalizers(cfg: GRPOConfig) -> dict:
    # What the aggregation of GRPO_LOSS_TYPES divides by, over the optimizer step's global batch.
    return {
        "sequence_mean": lambda totals: totals["examples"],
        "token_mean": lambda totals: totals["tokens"],
        "constant_normalizer": lambda totals: totals["examples"] * cfg.max_new_tokens,
    }


@dataclass
class GRPOMethod:
    cfg: GRPOConfig
    model: torch.nn.Module
    tokenizer: object
    train_items: list[PromptRow]  # the prompts (the loop reads only their count)
    eval_items: list[PromptRow] = field(default_factory=list)

    def __post_init__(self):
        from alignkit.train.lora import is_peft
        from alignkit.train.reference import Reference

        cfg = self.cfg
        self.rewards = build_reward_set(cfg.reward, cfg.reward_weights)
        self.group_size = cfg.num_generations
        self.prompts_per_round = cfg.batch_size * cfg.steps_per_generation // cfg.num_generations
        self.steps_per_round = cfg.steps_per_generation * cfg.num_iterations
        if len(self.train_items) < self.prompts_per_round:
            raise ValueError(f"{len(self.train_items)} prompts is fewer than one generation batch of {self.prompts_per_round}")
        # Steps of one pass over the prompts (resampled prompts count as used).
        self.steps_per_epoch = len(self.train_items) // self.prompts_per_round * self.steps_per_round
        self.engine = make_rollout_engine(self.model, self.tokenizer, cfg)
        self.reference = None
        if cfg.beta > 0:
            mode = cfg.reference if cfg.reference != "auto" else ("adapter" if is_peft(self.model) else "copy")
            self.reference = Reference(mode, self.model, lambda model, rows: completion_logps(model, rows, self.pad_id))
        self.normalizer = _normalizers(cfg)[GRPO_LOSS_TYPES[cfg.loss_type]]
        empty_buffer(self)  # the rollout buffer and where the prompt stream stands: the checkpointed state

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    # --- the rollout buffer ------------------------------------------------------------------

    def step_items(self, step: int, topo) -> list[RolloutRow]:
        """This process's rows for optimizer step ``step``: a ``steps_per_generation``-th of the round's buffer."""
        return round_items(self, step, topo, parts=self.cfg.steps_per_generation, passes=self.cfg.num_iterations)

    def fill(self, round_index: int, topo) -> None:
        """Sample, score and keep the groups of round ``round_index`` (this process's share of prompts)."""
        from alignkit.train.loop import _any_process

        cfg, G = self.cfg, self.group_size
        per_process = self.prompts_per_round // topo.world
        timings = {"time/generate": 0.0, "time/reward": 0.0, "time/score": 0.0}
        start = time.perf_counter()
        self.engine.load_weights(self.model)  # engines that keep their own copy take the current weights
        timings["time/generate"] += time.perf_counter() - start
        kept: list[RolloutRow] = []
        kept_groups = generated_groups = zero_groups = 0
        results, lengths, truncated = [], [], 0
        attempts = 1 + (cfg.resample_attempts if cfg.zero_signal == "resample" else 0)
        for attempt in range(attempts):
            missing = per_process - kept_groups
            if attempt and not _any_process(missing > 0, topo):
                break
            block = [prompt_at(self.train_items, self.cursor + topo.rank * per_process + i, cfg.seed) for i in range(per_process)]
            self.cursor += per_process * topo.world  # every process advances alike, whatever it used
            chosen = block[:missing] if attempt else block
            if not chosen:
                continue
            rollouts, result = sample_and_reward(self.engine, self.rewards, chosen, n=G, cfg=cfg, timings=timings,
                                                 seed=round_seed(cfg.seed, round_index, attempt, topo.rank))
            rewards = torch.tensor(result.total, dtype=torch.float64)
            advantages = group_advantages(rewards, group_size=G, scale_by_std=cfg.scale_rewards)
            grouped = rewards.view(-1, G)
            signal = (grouped.max(dim=1).values != grouped.min(dim=1).values).tolist()
            results.append(result)
            lengths += [len(c) for c in rollouts.completion_ids]
            truncated += rollouts.finish_reasons.count("length")
            generated_groups += len(signal)
            zero_groups += signal.count(False)
            for g, has_signal in enumerate(signal):
                if (cfg.zero_signal != "keep" and not has_signal) or kept_groups >= per_process:
                    continue
                kept_groups += 1
                kept += [RolloutRow(rollouts.prompt_ids[r], rollouts.completion_ids[r], rollouts.logprobs[r], float(advantages[r]))
                         for r in range(g * G, (g + 1) * G)]
        start = time.perf_counter()
        # Even with no rows kept here: a sharded model's forwards are collective (completion_logps).
        if cfg.old_logps == "trainer" and self.steps_per_round > 1:
            # The buffer serves several steps: π_old is the policy that sampled it, before any of them.
            for row, logps in zip(kept, completion_logps(self.model, kept, self.pad_id)):
                row.old_logps = logps
        if self.reference is not None:
            for row, logps in zip(kept, self.reference.logps(kept)):
                row.ref_logps = logps
        timings["time/score"] += time.perf_counter() - start

        merged = merge_reward_results(results, self.rewards)
        self.round, self.rows, self.buffer_world = round_index, kept, topo.world
        self.round_metrics = {
            **merged.metrics(),
            "zero_std_groups": zero_groups / max(generated_groups, 1),
            "buffer/groups": float(kept_groups),
            "completion_length": sum(lengths) / max(len(lengths), 1),
            "completion_length/max": float(max(lengths, default=0)),
            "completions/truncated": truncated / max(len(lengths), 1),
        }
        self.pending = timings

    # --- the loss ----------------------------------------------------------------------------

    def collate(self, rows: list[RolloutRow]) -> dict:
        batch = collate_rows(rows, self.pad_id)
        return {k: v.to(self.model.device) for k, v in batch.items()}

    batch_totals = staticmethod(response_token_totals)

    def loss(self, batch, totals: dict[str, float] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        metrics = {**self.round_metrics, **self.pending}
        self.pending = {}  # timings once per generation, on the first micro-batch after it
        from alignkit.models.logprobs import idle_forward, response_token_logps

        if batch["input_ids"].shape[0] == 0:  # every group of this micro-batch was dropped: nothing to learn
            # A zero from a forward that reaches every trainable weight, so each gets a (zero)
            # gradient and this process joins the gradient all-reduce (or FSDP's all-gathers and
            # reduce-scatters) like the processes that had rows.
            return idle_forward(self.model), metrics

        cfg, mask = self.cfg, batch["response_mask"]
        logps = response_token_logps(self.model, batch["input_ids"], batch["attention_mask"], mask)  # (B, T)
        trainer_old = batch["old_logps"] if "old_logps" in batch else logps.detach()  # on-policy: π_old = π_θ
        old = batch["sampling_logps"] if cfg.old_logps == "sampling" else trainer_old
        weights, is_metrics = truncated_importance_weights(trainer_old, batch["sampling_logps"], mask, cap=cfg.is_cap or math.inf)
        totals = totals or {"examples": mask.shape[0], "tokens": float(mask.sum())}
        loss, loss_metrics = grpo_loss(
            logps=logps, old_logps=old, advantages=batch["advantages"], mask=mask, ref_logps=batch.get("ref_logps"),
            epsilon_low=cfg.epsilon, epsilon_high=cfg.epsilon_high, beta=cfg.beta, aggregation=cfg.loss_type,
            normalizer=max(float(self.normalizer(totals)), 1.0),
            importance_weights=weights if cfg.old_logps == "trainer" and cfg.is_cap is not None else None)
        metrics.update({k: float(v) for k, v in {**loss_metrics, **is_metrics}.items()})
        return loss, metrics

    # --- evaluation and saving ---------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """Held-out prompts, one completion each (greedy by default): the rewards' means, the
        completion length, and ``pass@1``: the share of prompts where the first reward (the
        task's verifier: math, constraints, code) gave 1.0, with its 95 % Wilson interval."""
        from alignkit.eval.metrics import wilson_interval

        prompts = self.eval_items[: self.cfg.eval_limit]
        if not prompts:
            return {}
        self.engine.load_weights(self.model)
        rollouts, result = sample_and_reward(self.engine, self.rewards, prompts, n=1, cfg=self.cfg, seed=self.cfg.seed,
                                             held_out=True)
        verdicts = [v for v in next(iter(result.per_function.values())) if v is not None]
        passed = sum(v == 1.0 for v in verdicts)
        low, high = wilson_interval(passed, len(verdicts)) if verdicts else (math.nan, math.nan)
        return {**result.metrics(), "completion_length": rollouts.num_tokens / len(prompts),
                "pass@1": passed / len(verdicts) if verdicts else math.nan, "pass@1/ci_low": low, "pass@1/ci_high": high}

    def save(self, directory: Path) -> None:
        from alignkit.train.setup import save_run_model

        save_run_model(self.model, self.tokenizer, directory, self.cfg)

    def state_dict(self) -> dict:
        return buffer_state(self)

    def load_state_dict(self, state: dict) -> None:
        load_buffer_state(self, state)


def build_grpo(cfg: GRPOConfig) -> GRPOMethod:
    from alignkit.train.setup import prepare_model

    model, tokenizer = prepare_model(cfg)
    return GRPOMethod(cfg, model, tokenizer, *load_run_prompts(cfg, tokenizer))


def run_grpo(cfg: GRPOConfig) -> dict:
    from alignkit.train.loop import fit

    return fit(build_grpo(cfg), cfg)
