"""Supervised fine-tuning on demonstrations: cross-entropy on response tokens only."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import Field

from alignkit.losses import sft_loss
from alignkit.models.logprobs import response_token_logps
from alignkit.train.collate import collate_completions, to_device
from alignkit.train.config import RunConfig
from alignkit.train.packing import pack_completions
from alignkit.train.setup import load_encoded, prepare_model, sample_examples, save_run_model


class SFTConfig(RunConfig):
    """A supervised fine-tuning run."""

    lr: float = Field(2e-5, gt=0)
    """Peak learning rate."""
    packing: bool = False
    """Pack a micro-batch's examples into rows of up to max_length tokens (no padding, same loss)."""


@dataclass
class SFTMethod:
    cfg: SFTConfig
    model: torch.nn.Module
    tokenizer: object
    train_items: list
    eval_items: list = field(default_factory=list)

    @staticmethod
    def length(item) -> int:
        return len(item.prompt_ids) + len(item.completion_ids)

    def collate(self, items) -> dict:
        if self.cfg.packing:
            return to_device(pack_completions(items, self.tokenizer.pad_token_id, self.cfg.max_length), self.model.device)
        return to_device(collate_completions(items, self.tokenizer.pad_token_id), self.model.device)

    @staticmethod
    def batch_totals(batch) -> dict[str, float]:
        """Response tokens: the token mean divides by their count over the whole global batch."""
        return {"tokens": float(batch["response_mask"].sum())}

    def loss(self, batch, totals: dict[str, float] | None = None):
        token_logps = response_token_logps(
            self.model, batch["input_ids"], batch["attention_mask"], batch["response_mask"],
            position_ids=batch.get("position_ids"),
        )
        loss, metrics = sft_loss(token_logps=token_logps, response_mask=batch["response_mask"],
                                 normalizer=totals["tokens"] if totals else None)
        return loss, {k: float(v.float().mean()) for k, v in metrics.items()}

    def evaluate(self) -> dict[str, float]:
        if not self.eval_items:
            return {}
        # Token-weighted: every held-out response token counts once, whatever the batching.
        nll, tokens = 0.0, 0
        for start in range(0, len(self.eval_items), 8):
            batch = self.collate(self.eval_items[start : start + 8])
            nll -= response_token_logps(
                self.model, batch["input_ids"], batch["attention_mask"], batch["response_mask"],
                position_ids=batch.get("position_ids"),
            ).sum().item()
            tokens += int(batch["response_mask"][:, 1:].sum())
        return {"loss": nll / max(tokens, 1)}

    def save(self, directory: Path) -> None:
        save_run_model(self.model, self.tokenizer, directory, self.cfg)


def build_sft(cfg: SFTConfig) -> SFTMethod:
    model, tokenizer = prepare_model(cfg)
    train = sample_examples(load_encoded(cfg.data, "sft", tokenizer, cfg), cfg)
    evaluation = load_encoded(cfg.eval_data, "sft", tokenizer, cfg) if cfg.eval_data else []
    return SFTMethod(cfg, model, tokenizer, train, evaluation)


def run_sft(cfg: SFTConfig) -> dict:
    from alignkit.train.loop import fit

    return fit(build_sft(cfg), cfg)
