"""KTO on unpaired binary feedback (prompt, completion, thumbs up/down).

The reference point z0 is a batch estimate of KL(policy‖reference) from *mismatched* pairs:
each prompt is scored with another example's completion (a fixed pairing, item i with i+1, as
TRL does by shifting), so it can be cached with the reference log-probs. The estimate is taken
over the whole global batch (every micro-batch, every process: ``batch_totals``), so one z0
serves every example of a step, however the batch is split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from alignkit.losses import batch_mean, kto_loss, kto_reference_point
from alignkit.models.logprobs import sequence_logps
from alignkit.train.collate import pad_sequences, to_device
from alignkit.train.config import RunConfig
from alignkit.train.eval_loop import mean_loss_metrics
from alignkit.train.reference import Reference, stack_cached
from alignkit.train.setup import load_encoded, prepare_model, sample_examples, save_run_model


class KTOConfig(RunConfig):
    """A KTO run."""

    lr: float = Field(5e-6, gt=0)
    """Peak learning rate."""
    beta: float = Field(0.1, gt=0)
    """β of the implicit reward."""
    desirable_weight: float = Field(1.0, gt=0)
    """λ_D: weight of thumbs-up examples (raise it when they are the minority)."""
    undesirable_weight: float = Field(1.0, gt=0)
    """λ_U: weight of thumbs-down examples."""
    reference: Literal["auto", "copy", "adapter", "precompute"] = "auto"
    """How reference log-probs are obtained."""


@dataclass
class KTOItem:
    example: object  # alignkit.data.EncodedBinary
    kl_completion_ids: list[int]
    ref: tuple[float, float] | None = None  # cached (completion, kl completion) reference sums


def pair_for_kl(examples: list) -> list[KTOItem]:
    """Give example i the completion of example i+1 (wrapping) for the KL estimate."""
    n = len(examples)
    return [KTOItem(ex, examples[(i + 1) % n].completion_ids) for i, ex in enumerate(examples)]


@dataclass
class KTOMethod:
    cfg: KTOConfig
    model: torch.nn.Module
    tokenizer: object
    train_items: list[KTOItem]
    eval_items: list[KTOItem] = field(default_factory=list)

    def __post_init__(self):
        self.reference = Reference(self.cfg.reference, self.model, self.score)
        for items in (self.train_items, self.eval_items):
            self.reference.precompute(items, self.collate)

    def collate(self, items: list[KTOItem]) -> dict:
        """(2B, T): rows 0..B-1 prompt+completion, rows B..2B-1 prompt+mismatched completion."""
        prompts = [it.example.prompt_ids for it in items]
        sequences = [p + it.example.completion_ids for p, it in zip(prompts, items)]
        sequences += [p + it.kl_completion_ids for p, it in zip(prompts, items)]
        batch = pad_sequences(sequences, [len(p) for p in prompts] * 2, self.tokenizer.pad_token_id)
        batch["is_desirable"] = torch.tensor([bool(it.example.label) for it in items])
        cached = stack_cached(items)
        if cached is not None:
            batch["ref_logps"] = cached
        return to_device(batch, self.model.device)

    @staticmethod
    def score(model, batch, rows: slice = slice(None)) -> torch.Tensor:
        return sequence_logps(
            model, batch["input_ids"][rows], batch["attention_mask"][rows], batch["response_mask"][rows]
        )[0]

    def batch_totals(self, batch) -> dict[str, float]:
        """Σ log-ratio of the mismatched pairs: z0 is their mean over the whole global batch."""
        n = batch["is_desirable"].shape[0]
        with torch.no_grad():  # z0 is a detached reference point
            policy_kl = self.score(self.model, batch, slice(n, None))
            ref_kl = self.reference.logps(batch)[n:]
        return {"kl_logratio_sum": float((policy_kl - ref_kl).sum())}

    def loss(self, batch, totals: dict[str, float] | None = None):
        n = batch["is_desirable"].shape[0]
        if totals is None:  # one batch on its own (evaluation): z0 and the mean over this batch
            totals = {"examples": n, **self.batch_totals(batch)}
        policy = self.score(self.model, batch, slice(0, n))
        ref = self.reference.logps(batch)
        losses, metrics = kto_loss(
            policy_logps=policy,
            ref_logps=ref[:n],
            is_desirable=batch["is_desirable"],
            kl_reference=kto_reference_point(totals["kl_logratio_sum"], totals["examples"]),
            beta=self.cfg.beta,
            desirable_weight=self.cfg.desirable_weight,
            undesirable_weight=self.cfg.undesirable_weight,
        )
        return batch_mean(losses, totals["examples"]), {k: float(v.float().mean()) for k, v in metrics.items() if v.numel()}

    def evaluate(self) -> dict[str, float]:
        return mean_loss_metrics(self, self.eval_items)

    def save(self, directory: Path) -> None:
        save_run_model(self.model, self.tokenizer, directory, self.cfg)


def build_kto(cfg: KTOConfig) -> KTOMethod:
    model, tokenizer = prepare_model(cfg)
    train = pair_for_kl(sample_examples(load_encoded(cfg.data, "binary", tokenizer, cfg), cfg))
    evaluation = pair_for_kl(load_encoded(cfg.eval_data, "binary", tokenizer, cfg)) if cfg.eval_data else []
    return KTOMethod(cfg, model, tokenizer, train, evaluation)


def run_kto(cfg: KTOConfig) -> dict:
    from alignkit.train.loop import fit

    return fit(build_kto(cfg), cfg)
