"""DPO and its family on offline preference pairs.

One step: score prompt+chosen and prompt+rejected with the policy (one forward over 2B rows),
take the reference's scores (cached, a copy, or the adapter-free base), and hand the sums to a
loss from ``alignkit.losses.PREFERENCE_LOSSES``. The trainer holds no loss math.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from alignkit.losses import PREFERENCE_LOSSES, call_preference_loss
from alignkit.models.logprobs import sequence_logps
from alignkit.train.collate import collate_pairs
from alignkit.train.config import RunConfig
from alignkit.train.reference import frozen_copy, reference_weights, resolve_mode
from alignkit.train.setup import load_pairs, prepare_model, save_run_model


class DPOConfig(RunConfig):
    """A preference-optimisation run."""

    lr: float = Field(5e-6, gt=0)
    """Peak learning rate (DPO paper: 5e-7 to 5e-6 for full fine-tunes; raise it for LoRA)."""
    loss: Literal["dpo", "ipo", "cdpo", "hinge", "rpo", "simpo", "orpo"] = "dpo"
    """Preference objective, from alignkit.losses.PREFERENCE_LOSSES."""
    beta: float = Field(0.1, gt=0)
    """β: inverse temperature of the implicit reward (SimPO's paper uses 2.0-2.5)."""
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    """cDPO: assumed probability that a label is flipped."""
    rpo_alpha: float = Field(1.0, ge=0)
    """RPO: weight of the chosen-response NLL term."""
    gamma: float = Field(0.5, ge=0)
    """SimPO: target reward margin γ/β ratio (TRL's gamma_beta_ratio)."""
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
    reference_model: torch.nn.Module | None = None

    def __post_init__(self):
        self.spec = PREFERENCE_LOSSES[self.cfg.loss]
        self.mode = resolve_mode(self.cfg.reference, self.model) if self.spec.needs_reference else "none"
        if self.mode == "copy":
            self.reference_model = frozen_copy(self.model)
        elif self.mode == "precompute":
            for items in (self.train_items, self.eval_items):
                self.precompute_reference(items)

    def collate(self, items: list[PairItem]) -> dict:
        batch = collate_pairs([it.pair for it in items], self.tokenizer.pad_token_id)
        if items and items[0].ref is not None:
            batch["ref_logps"] = torch.tensor([it.ref[0] for it in items] + [it.ref[1] for it in items])
        return batch

    def _score(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return sequence_logps(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])

    def reference_logps(self, batch) -> torch.Tensor:
        if "ref_logps" in batch:
            return batch["ref_logps"]
        if self.mode == "copy":
            with torch.no_grad():
                return self._score(self.reference_model, batch)[0]
        with reference_weights(self.model) as ref:
            return self._score(ref, batch)[0]

    def precompute_reference(self, items: list[PairItem], batch_size: int = 8) -> None:
        """Score every pair once with the reference weights and keep the sums with the example."""
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            ref = self.reference_logps(self.collate(chunk)).tolist()
            for i, item in enumerate(chunk):
                item.ref = (ref[i], ref[i + len(chunk)])

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, float]]:
        logps, lengths = self._score(self.model, batch)
        n = logps.shape[0] // 2
        available = {
            "policy_chosen_logps": logps[:n],
            "policy_rejected_logps": logps[n:],
            "chosen_lengths": lengths[:n],
            "rejected_lengths": lengths[n:],
        }
        if self.spec.needs_reference:
            ref = self.reference_logps(batch)
            available.update(ref_chosen_logps=ref[:n], ref_rejected_logps=ref[n:])
        hparams = {k: getattr(self.cfg, k) for k in ("beta", "label_smoothing", "rpo_alpha", "gamma", "orpo_lambda")}
        losses, metrics = call_preference_loss(self.cfg.loss, available, hparams)
        return losses.mean(), {k: float(v.float().mean()) for k, v in metrics.items()}

    def evaluate(self) -> dict[str, float]:
        """Held-out loss and implicit-reward metrics (accuracy = chosen reward > rejected)."""
        if not self.eval_items:
            return {}
        totals: dict[str, float] = {}
        size = max(1, self.cfg.batch_size // self.cfg.grad_accum)
        for start in range(0, len(self.eval_items), size):
            chunk = self.eval_items[start : start + size]
            loss, metrics = self.loss(self.collate(chunk))
            for k, v in {"loss": loss.item(), **metrics}.items():
                totals[k] = totals.get(k, 0.0) + v * len(chunk)
        return {k: v / len(self.eval_items) for k, v in totals.items()}

    def save(self, directory: Path) -> None:
        save_run_model(self.model, self.tokenizer, directory, self.cfg)


def build_dpo(cfg: DPOConfig) -> DPOMethod:
    model, tokenizer = prepare_model(cfg)
    train = [PairItem(p) for p in load_pairs(cfg.data, tokenizer, cfg)]
    evaluation = [PairItem(p) for p in load_pairs(cfg.eval_data, tokenizer, cfg)] if cfg.eval_data else []
    return DPOMethod(cfg, model, tokenizer, train, evaluation)


def run_dpo(cfg: DPOConfig) -> dict:
    from alignkit.train.loop import fit

    return fit(build_dpo(cfg), cfg)
