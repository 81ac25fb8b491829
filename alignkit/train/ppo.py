"""PPO-RLHF (Ziegler et al. 2019; Ouyang et al. 2022, InstructGPT) and, on the same machinery,
RLOO (``train/rloo.py``): policy-gradient steps on a reward minus a KL penalty to a reference.

The four roles: the policy (full or LoRA); the reference (with LoRA the adapter-disabled base, so
one copy of the base serves both; else a frozen copy); the reward (reward functions and/or a
reward-model directory, ``--reward``); the value model (a scalar head on a copy of the policy or of
the reward model, ``value_model``). A round, every ``num_mini_batches × ppo_epochs`` steps::

    P prompts ──► engine: n samples each                 P = batch_size · num_mini_batches / n
              ──► rewards: score s (− missing_eos_penalty when cut off, clipped to ±reward_clip)
              ──► one forward each: π_old, π_ref, V_old (response positions only)
              ──► r_t = −β·KL_t, + s on the last token          losses.kl_penalized_rewards (k1 or k3)
              ──► PPO: GAE(γ, λ) on r_t and V_old, whitened     losses.gae_advantages
                  RLOO: Σ_t r_t per sample, leave-one-out baseline over its prompt's n samples
              ──► β ← the KL controller (fixed, or Ziegler's adaptive towards target_kl)
    then ppo_epochs passes over the round in num_mini_batches shuffled minibatches (one optimizer
    step each): clipped policy loss, + vf_coef × clipped value loss. The loop (train/loop.py) does
    the rest; the buffer and β are in the checkpoints, so resume is exact.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator

from alignkit.losses import (
    AdaptiveKLController,
    FixedKLController,
    explained_variance,
    gae_advantages,
    kl_penalized_rewards,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
    rloo_advantages,
)
from alignkit.models.logprobs import response_token_logps
from alignkit.train.online import (
    OnlineConfig,
    PromptRow,
    RolloutRow,
    buffer_state,
    build_reward_set,
    collate_rows,
    empty_buffer,
    load_buffer_state,
    make_rollout_engine,
    prompt_at,
    response_token_totals,
    round_items,
    round_seed,
    sample_and_reward,
)

log = logging.getLogger(__name__)


class RLHFConfig(OnlineConfig):
    """What PPO and RLOO share: rollouts per round, the KL penalty in the reward, the clipped update."""

    batch_size: int = Field(16, ge=1)
    """Completions per optimizer step (a minibatch)."""
    num_mini_batches: int = Field(2, ge=1)
    """Minibatches (optimizer steps) per pass over a rollout batch of batch_size × num_mini_batches completions."""
    ppo_epochs: int = Field(4, ge=1)
    """Passes over each rollout batch (TRL's num_ppo_epochs)."""
    lr: float = Field(1e-5, gt=0)
    """Peak learning rate (raise it for LoRA)."""
    clip_epsilon: float = Field(0.2, gt=0)
    """Clip range ε of the policy ratio (Schulman et al. 2017)."""
    kl_coef: float = Field(0.05, ge=0)
    """β of the per-token KL penalty in the reward (the initial β when target_kl is set)."""
    target_kl: float | None = Field(None, gt=0)
    """Target sequence KL (nats) of Ziegler et al.'s adaptive controller (none: β stays fixed)."""
    kl_horizon: int = Field(10_000, ge=1)
    """Samples over which the adaptive controller corrects its error (Ziegler et al.: 10,000)."""
    kl_estimator: Literal["k1", "k3"] = "k1"
    """Per-token KL estimator in the reward: k1 = log π − log π_ref (TRL, InstructGPT), k3 = low-variance, ≥ 0."""
    reference: Literal["auto", "copy", "adapter"] = "auto"
    """The reference: auto = the adapter-disabled base with LoRA (one copy of the weights), else a frozen copy."""
    reward_clip: float | None = Field(None, gt=0)
    """Clip the score to [−c, c] before the KL penalty (none: no clipping)."""
    missing_eos_penalty: float | None = Field(None, ge=0)
    """Subtracted from the score of a response cut off at max_new_tokens (TRL's; none: no penalty)."""
    eval_reward: list[str] = []
    """Rewards scored on held-out prompts (default: the training rewards); e.g. vader when training on a reward model."""
    eval_temperature: float = Field(1.0, ge=0)
    """Sampling temperature for held-out evaluation (1: the policy's own samples, as the KL estimate needs)."""

    @model_validator(mode="after")
    def _check_round(self):
        rollout = self.batch_size * self.num_mini_batches
        if rollout % self.samples_per_prompt:
            raise ValueError(f"batch_size × num_mini_batches = {rollout} completions must be a multiple of "
                             f"{self.samples_per_prompt} samples per prompt")
        return self

    @property
    def samples_per_prompt(self) -> int:
        return 1


class PPOConfig(RLHFConfig):
    """A PPO-RLHF run: policy, reference, reward and value."""

    value_model: Literal["policy", "reward"] = "policy"
    """The value model: a scalar head on a copy of the policy (fresh head) or of the reward model given in --reward."""
    vf_coef: float = Field(0.1, ge=0)
    """Weight of the value loss (TRL's default)."""
    value_clip: float = Field(0.2, gt=0)
    """Clip range of the value update around V_old (TRL's cliprange_value)."""
    gamma: float = Field(1.0, ge=0, le=1)
    """Discount γ of GAE."""
    lam: float = Field(0.95, ge=0, le=1)
    """λ of GAE (bias-variance trade-off of the advantages)."""
    whiten_rewards: bool = False
    """Whiten the per-token rewards over the rollout batch before GAE (scale only, TRL's whiten_rewards)."""


class PolicyAndValue(torch.nn.Module):
    """The trained modules of PPO as one ``model`` for the loop: optimizer, clipping, checkpoints."""

    def __init__(self, policy: torch.nn.Module, value: torch.nn.Module):
        super().__init__()
        self.policy, self.value = policy, value

    @property
    def device(self) -> torch.device:
        return self.policy.device


def ppo_advantages(method, batch, token_rewards) -> dict[str, torch.Tensor]:
    """GAE on the KL-penalised per-token rewards and the sampled values; advantages whitened."""
    cfg, mask = method.cfg, batch["response_mask"]
    if cfg.whiten_rewards:
        token_rewards = masked_whiten(token_rewards, mask, shift_mean=False) * mask
    advantages, returns = gae_advantages(token_rewards, batch["old_values"], mask, gamma=cfg.gamma, lam=cfg.lam)
    return {"token_advantages": masked_whiten(advantages, mask) * mask, "returns": returns, "raw": advantages,
            "value/explained_variance": explained_variance(batch["old_values"], returns, mask)}


def rloo_advantages_of_round(method, batch, token_rewards) -> dict[str, torch.Tensor]:
    """Each sample's KL-penalised return Σ_t r_t minus the mean of its prompt's other samples."""
    returns = token_rewards.sum(-1)  # (R,)
    advantages = rloo_advantages(returns, group_size=method.cfg.num_generations)
    whitened = (advantages - advantages.mean()) / (advantages.std() + 1e-8) if method.cfg.normalize_advantages else advantages
    return {"advantage": whitened, "raw": advantages[:, None].expand_as(token_rewards)}


@dataclass
class RLHFMethod:
    """PPO (with a value model) or RLOO (``value=None``) on the shared loop."""

    cfg: RLHFConfig
    policy: torch.nn.Module
    tokenizer: object
    train_items: list[PromptRow]
    eval_items: list[PromptRow] = field(default_factory=list)
    value: torch.nn.Module | None = None

    def __post_init__(self):
        from alignkit.train.lora import is_peft
        from alignkit.train.reference import Reference

        cfg = self.cfg
        self.model = PolicyAndValue(self.policy, self.value) if self.value is not None else self.policy
        self.advantages = ppo_advantages if self.value is not None else rloo_advantages_of_round
        self.rewards = build_reward_set(cfg.reward, cfg.reward_weights)
        self.eval_rewards = build_reward_set(cfg.eval_reward, []) if cfg.eval_reward else self.rewards
        self.n = cfg.samples_per_prompt
        self.prompts_per_round = cfg.batch_size * cfg.num_mini_batches // self.n
        self.steps_per_round = cfg.num_mini_batches * cfg.ppo_epochs
        if len(self.train_items) < self.prompts_per_round:
            raise ValueError(f"{len(self.train_items)} prompts is fewer than one rollout batch of {self.prompts_per_round}")
        self.steps_per_epoch = len(self.train_items) // self.prompts_per_round * self.steps_per_round
        self.engine = make_rollout_engine(self.policy, self.tokenizer, cfg)
        mode = cfg.reference if cfg.reference != "auto" else ("adapter" if is_peft(self.policy) else "copy")
        self.reference = Reference(mode, self.policy, self.token_logps)
        self.kl = (AdaptiveKLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon) if cfg.target_kl
                   else FixedKLController(cfg.kl_coef))
        empty_buffer(self)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @staticmethod
    def token_logps(model, batch) -> torch.Tensor:
        return response_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])

    def collate(self, rows: list[RolloutRow]) -> dict:
        return {k: v.to(self.policy.device) for k, v in collate_rows(rows, self.pad_id).items()}

    # --- a round: sample, score, advantages -------------------------------------------------------

    def step_items(self, step: int, topo) -> list[RolloutRow]:
        return round_items(self, step, topo, parts=self.cfg.num_mini_batches, passes=self.cfg.ppo_epochs)

    def fill(self, round_index: int, topo) -> None:
        from alignkit.losses import sum_across_processes
        from alignkit.models.value import token_values
        from alignkit.train.loop import NonFiniteLossError, _any_process

        cfg, timings = self.cfg, {"time/generate": 0.0, "time/reward": 0.0, "time/score": 0.0}
        start = time.perf_counter()
        self.engine.load_weights(self.policy)
        timings["time/generate"] += time.perf_counter() - start
        per_process = self.prompts_per_round // topo.world
        prompts = [prompt_at(self.train_items, self.cursor + topo.rank * per_process + i, cfg.seed) for i in range(per_process)]
        self.cursor += per_process * topo.world
        rollouts, result = sample_and_reward(self.engine, self.rewards, prompts, n=self.n, cfg=cfg, timings=timings,
                                             seed=round_seed(cfg.seed, round_index, 0, topo.rank))
        if _any_process(any(result.non_finite.values()), topo):  # a broken reward is a bug, not a verdict
            raise NonFiniteLossError(f"round {round_index + 1}: reward returned NaN/inf ({result.non_finite or 'on another process'}); "
                                     "stopped before training on it, weights untouched")
        start = time.perf_counter()
        rows = [RolloutRow(p, c, lp, 0.0) for p, c, lp in zip(rollouts.prompt_ids, rollouts.completion_ids, rollouts.logprobs)]
        batch = self.collate(rows)
        mask = batch["response_mask"]
        with torch.no_grad():
            batch["old_logps"] = self.token_logps(self.policy, batch)  # (R, T) the trainer's π_old
            ref_logps = self.reference.logps(batch)
            if self.value is not None:
                batch["old_values"] = token_values(self.value, batch["input_ids"], batch["attention_mask"], mask)
        scores = torch.tensor(result.total, dtype=torch.float32, device=mask.device)
        cut = torch.tensor([r == "length" for r in rollouts.finish_reasons], device=mask.device)
        if cfg.missing_eos_penalty:
            scores = scores - cfg.missing_eos_penalty * cut
        if cfg.reward_clip:
            scores = scores.clamp(-cfg.reward_clip, cfg.reward_clip)
        kl_coef = self.kl.kl_coef
        token_rewards, kl = kl_penalized_rewards(scores=scores, logps=batch["old_logps"], ref_logps=ref_logps, mask=mask,
                                                 kl_coef=kl_coef, estimator=cfg.kl_estimator)
        out = self.advantages(self, batch, token_rewards)
        timings["time/score"] += time.perf_counter() - start

        for i, row in enumerate(rows):
            positions = mask[i].bool()
            row.old_logps = batch["old_logps"][i, positions].tolist()
            row.advantage = float(out["advantage"][i]) if "advantage" in out else 0.0
            for name in ("token_advantages", "returns", "old_values"):
                source = out.get(name, batch.get(name))
                if source is not None:
                    setattr(row, name, source[i, positions].tolist())
        sequence_kl = kl.sum(-1)  # (R,)
        totals = sum_across_processes({"kl": float(sequence_kl.sum()), "n": float(len(rows))})
        self.kl.update(totals["kl"] / totals["n"], int(totals["n"]))  # β for the next round
        lengths = mask.sum(-1).float()
        self.round, self.rows, self.buffer_world = round_index, rows, topo.world
        self.round_metrics = {
            **result.metrics(),  # reward: the raw score (mean), rewards/<name>/mean ...
            "reward/penalized": float(token_rewards.sum(-1).mean()),  # score − β·Σ KL_t: what is maximised
            "kl": float(sequence_kl.mean()),
            "kl_coef": kl_coef,
            "entropy": float(-masked_mean(batch["old_logps"], mask)),  # E[−log π(a)] over the sampled tokens
            "advantages/mean": float(masked_mean(out["raw"], mask)),
            "advantages/std": float(masked_mean((out["raw"] - masked_mean(out["raw"], mask)) ** 2, mask).sqrt()),
            "completion_length": float(lengths.mean()),
            "completions/truncated": float(cut.float().mean()),
        }
        if "value/explained_variance" in out:
            self.round_metrics["value/explained_variance"] = float(out["value/explained_variance"])
        self.pending = timings

    # --- the loss -----------------------------------------------------------------------------------

    batch_totals = staticmethod(response_token_totals)

    def loss(self, batch, totals: dict[str, float] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        from alignkit.models.value import token_values

        metrics = {**self.round_metrics, **self.pending}
        self.pending = {}  # timings once per round, on the first micro-batch after it
        cfg, mask = self.cfg, batch["response_mask"]
        tokens = max(totals["tokens"], 1.0) if totals else None  # token mean over the optimizer step's minibatch
        logps = self.token_logps(self.policy, batch)  # (B, T)
        advantages = batch["token_advantages"] if self.value is not None else batch["advantages"]
        loss, policy_metrics = ppo_policy_loss(logps=logps, old_logps=batch["old_logps"], advantages=advantages, mask=mask,
                                               clip_epsilon=cfg.clip_epsilon, normalizer=tokens)
        metrics["loss/policy"] = float(loss.detach())
        if self.value is not None:
            values = token_values(self.value, batch["input_ids"], batch["attention_mask"], mask)
            value_loss, value_metrics = ppo_value_loss(values=values, old_values=batch["old_values"], returns=batch["returns"],
                                                       mask=mask, clip_range=cfg.value_clip, normalizer=tokens)
            loss = loss + cfg.vf_coef * value_loss
            metrics.update({"loss/value": float(value_loss.detach()), **{k: float(v) for k, v in value_metrics.items()}})
        metrics.update({k: float(v) for k, v in policy_metrics.items()})
        return loss, metrics

    # --- evaluation and saving ----------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """Held-out prompts, one sample each at eval_temperature: the eval rewards' means, and the
        sequence KL(π‖π_ref) estimated on those samples (k1 and k3 summed over each response)."""
        from alignkit.losses import kl_penalty

        prompts = self.eval_items[: self.cfg.eval_limit]
        if not prompts:
            return {}
        self.engine.load_weights(self.policy)
        rollouts, result = sample_and_reward(self.engine, self.eval_rewards, prompts, n=1, cfg=self.cfg,
                                             seed=self.cfg.seed, held_out=True)
        rows = [RolloutRow(p, c, lp, 0.0) for p, c, lp in zip(rollouts.prompt_ids, rollouts.completion_ids, rollouts.logprobs)]
        kl = {"k1": 0.0, "k3": 0.0}
        for start in range(0, len(rows), 16):
            batch = self.collate(rows[start : start + 16])
            logps, ref = self.token_logps(self.policy, batch), self.reference.logps(batch)
            for name in kl:
                kl[name] += float((kl_penalty(logps, ref, estimator=name) * batch["response_mask"]).sum())
        return {**result.metrics(), "kl": kl["k1"] / len(rows), "kl/k3": kl["k3"] / len(rows),
                "completion_length": rollouts.num_tokens / len(rows)}

    def save(self, directory: Path) -> None:
        from alignkit.train.setup import save_run_model

        save_run_model(self.policy, self.tokenizer, directory, self.cfg)  # the value model is a training aid

    def state_dict(self) -> dict:
        return {**buffer_state(self), "kl_coef": float(self.kl.kl_coef)}

    def load_state_dict(self, state: dict) -> None:
        load_buffer_state(self, state)
        self.kl.kl_coef = float(state["kl_coef"])


def build_value_model(cfg: PPOConfig, tokenizer, device) -> torch.nn.Module:
    """A copy of the policy (fresh head) or of the first reward-model directory in ``--reward``."""
    from alignkit.models.value import load_value_model
    from alignkit.train.lora import apply_lora
    from alignkit.train.setup import weights_dtype

    source = cfg.model
    if cfg.value_model == "reward":
        directories = [r for r in cfg.reward if Path(r).is_dir()]
        if not directories:
            raise ValueError("value_model=reward needs a reward-model directory in --reward")
        source = str(Path(directories[0]) / "model") if (Path(directories[0]) / "model").is_dir() else directories[0]
    torch.manual_seed(cfg.seed)  # the fresh head's initialisation
    value = load_value_model(source, tokenizer, dtype=weights_dtype(cfg),
                             trust_remote_code=cfg.trust_remote_code)
    if cfg.lora_r:
        value = apply_lora(value, cfg, task_type="SEQ_CLS")  # SEQ_CLS keeps the score head trainable
    return value.to(device)


def build_rlhf(cfg: RLHFConfig, *, with_value: bool) -> RLHFMethod:
    from alignkit.train.online import load_run_prompts
    from alignkit.train.setup import prepare_model

    policy, tokenizer = prepare_model(cfg)
    value = build_value_model(cfg, tokenizer, policy.device) if with_value else None
    return RLHFMethod(cfg, policy, tokenizer, *load_run_prompts(cfg, tokenizer), value=value)


def run_ppo(cfg: PPOConfig) -> dict:
    from alignkit.train.loop import fit

    return fit(build_rlhf(cfg, with_value=True), cfg)

