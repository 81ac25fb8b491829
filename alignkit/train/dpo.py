"""DPO and its family on offline preference pairs.

One step: score chosen and rejected with the policy in one forward over B packed rows
``[prompt | chosen | rejected]`` (the prompt encoded once, see ``packing.py``),
take the reference's scores (cached, a copy, or the adapter-free base), and hand the sums to a
loss from ``alignkit.losses.PREFERENCE_LOSSES``. The trainer holds no loss math.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from alignkit.losses import PREFERENCE_LOSSES, batch_mean, call_preference_loss
from alignkit.train.collate import to_device
from alignkit.train.config import RunConfig
from alignkit.train.eval_loop import mean_loss_metrics
from alignkit.train.packing import pack_pairs, packed_pair_logps
from alignkit.train.reference import Reference, stack_cached
from alignkit.train.setup import load_pairs, prepare_model, sample_examples, save_run_model


class DPOConfig(RunConfig):
    """A preference-optimisation run."""

    lr: float = Field(5e-6, gt=0)
    """Peak learning rate (DPO paper: 5e-7 to 5e-6 for full fine-tunes; raise it for LoRA)."""
    loss: Literal[tuple(PREFERENCE_LOSSES)] = "dpo"  # the choices are the loss table's names
    """Preference objective: a name in alignkit.losses.PREFERENCE_LOSSES."""
    beta: float = Field(0.1, gt=0)
    """β: inverse temperature of the implicit reward (SimPO's paper uses 2.0-2.5)."""
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    """cDPO: assumed probability that a label is flipped."""
    rpo_alpha: float = Field(1.0, ge=0)
    """RPO: weight of the chosen-response NLL term."""
    gamma: float = Field(0.5, ge=0)
    """SimPO: target reward margin γ (TRL's simpo_gamma; the paper tunes β in [2, 10])."""
    orpo_lambda: float = Field(0.1, ge=0)
    """ORPO: weight λ of the odds-ratio term."""
    reference: Literal["auto", "copy", "adapter", "precompute"] = "auto"
    """How reference log-probs are obtained (ignored by reference-free losses)."""


@dataclass
class PairItem:
    pair: object  # alignkit.data.EncodedPair
    ref: tuple[float, float] | None = None  # cached (chosen, rejected) reference sums


@dataclass
class DPOMethod:
    cfg: DPOConfig
    model: torch.nn.Module
    tokenizer: object
    train_items: list[PairItem]
    eval_items: list[PairItem] = field(default_factory=list)

    def __post_init__(self):
        self.spec = PREFERENCE_LOSSES[self.cfg.loss]
        self.reference = None
        if self.spec.needs_reference:
            self.reference = Reference(self.cfg.reference, self.model, self.score)
            for items in (self.train_items, self.eval_items):
                self.reference.precompute(sorted(items, key=self.length), self.collate)  # sorted: less padding

    @staticmethod
    def length(item: PairItem) -> int:
        """Tokens in the packed row of a pair (for length-grouped batches)."""
        return len(item.pair.prompt_ids) + len(item.pair.chosen_ids) + len(item.pair.rejected_ids)

    def collate(self, items: list[PairItem]) -> dict:
        batch = pack_pairs([it.pair for it in items], self.tokenizer.pad_token_id)
        cached = stack_cached(items)
        if cached is not None:
            batch["ref_logps"] = cached
        return to_device(batch, self.model.device)

    @staticmethod
    def score(model, batch) -> torch.Tensor:
        """Summed response log-probs of the 2B sequences: (chosen..., rejected...)."""
        return packed_pair_logps(model, batch)[0]

    @staticmethod
    def batch_totals(batch) -> dict[str, float]:
        """Chosen response tokens (the RPO / ORPO NLL is a token mean over the global batch)."""
        return {"chosen_tokens": float(batch["chosen_mask"].sum())}

    def loss(self, batch, totals: dict[str, float] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        logps, lengths = packed_pair_logps(self.model, batch)
        n = logps.shape[0] // 2
        pairs = totals["examples"] if totals else n
        chosen_tokens = totals["chosen_tokens"] if totals else lengths[:n].sum()
        available = {
            "policy_chosen_logps": logps[:n],
            "policy_rejected_logps": logps[n:],
            "chosen_lengths": lengths[:n],
            "rejected_lengths": lengths[n:],
        }
        if self.spec.needs_chosen_nll:
            # RPO / ORPO: the token-mean NLL over all chosen response tokens of the global batch
            # (TRL's convention), written per pair as -log π(y_w) / (mean chosen length), whose
            # mean over the global batch is exactly that token mean.
            available["chosen_nll"] = -logps[:n] * pairs / chosen_tokens
        if self.spec.needs_reference:
            ref = self.reference.logps(batch)
            available.update(ref_chosen_logps=ref[:n], ref_rejected_logps=ref[n:])
        hparams = {k: getattr(self.cfg, k) for k in ("beta", "label_smoothing", "rpo_alpha", "gamma", "orpo_lambda")}
        losses, metrics = call_preference_loss(self.cfg.loss, available, hparams)
        return batch_mean(losses, pairs), {k: float(v.float().mean()) for k, v in metrics.items()}

    def evaluate(self) -> dict[str, float]:
        """Held-out loss and implicit-reward metrics (accuracy = chosen reward > rejected)."""
        return mean_loss_metrics(self, self.eval_items)

    def save(self, directory: Path) -> None:
        save_run_model(self.model, self.tokenizer, directory, self.cfg)


def build_dpo(cfg: DPOConfig) -> DPOMethod:
    model, tokenizer = prepare_model(cfg)
    train = [PairItem(p) for p in sample_examples(load_pairs(cfg.data, tokenizer, cfg), cfg)]
    evaluation = [PairItem(p) for p in load_pairs(cfg.eval_data, tokenizer, cfg)] if cfg.eval_data else []
    return DPOMethod(cfg, model, tokenizer, train, evaluation)


def run_dpo(cfg: DPOConfig) -> dict:
    from alignkit.train.loop import fit

    return fit(build_dpo(cfg), cfg)
