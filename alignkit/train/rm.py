"""Bradley-Terry reward model: a scalar head on the LM, trained on preference pairs.

One step scores prompt+chosen and prompt+rejected (one forward over 2B rows) and applies
``bradley_terry_loss``. ``--ensemble N`` trains N members with seeds seed..seed+N-1 into
``output_dir/member-i`` for conservative (mean − k·std, min) rewards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import Field, field_validator

from alignkit.losses import batch_mean, bradley_terry_loss
from alignkit.models.heads import load_scalar_model, sequence_scores
from alignkit.train.collate import collate_pairs, to_device
from alignkit.train.config import RunConfig
from alignkit.train.eval_loop import mean_loss_metrics
from alignkit.train.lora import apply_lora
from alignkit.train.setup import load_pairs, sample_examples, save_run_model, train_only_last_layers, weights_dtype


class ScalarHeadConfig(RunConfig):
    """What every run that trains a scalar head on the LM shares (``rm``, ``prm``)."""

    @field_validator("load_in_4bit")
    @classmethod
    def _no_4bit(cls, value: bool) -> bool:
        if value:
            raise ValueError("load_in_4bit is not supported for reward models yet (sft, dpo and kto support it)")
        return value


def load_scalar_head_model(cfg: ScalarHeadConfig):
    """(model, tokenizer): the LM with a fresh scalar score head, seeded, with only the last
    ``trainable_layers`` (or LoRA adapters) left trainable."""
    torch.manual_seed(cfg.seed)  # the score head's initialisation depends on the seed
    model, tokenizer = load_scalar_model(cfg.model, dtype=weights_dtype(cfg), trust_remote_code=cfg.trust_remote_code)
    if cfg.trainable_layers:
        train_only_last_layers(model, cfg.trainable_layers)
    if cfg.lora_r:
        model = apply_lora(model, cfg, task_type="SEQ_CLS")  # SEQ_CLS keeps the score head trainable
    return model, tokenizer


class RMConfig(ScalarHeadConfig):
    """A reward-model run."""

    lr: float = Field(1e-5, gt=0)
    """Peak learning rate."""
    margin: bool = False
    """Use the dataset's per-pair `margin` column (Llama-2 style) when present."""
    center_coef: float = Field(0.0, ge=0)
    """Reward-centering coefficient (Eisenstein et al. 2023); 0 disables it."""
    ensemble: int = Field(1, ge=1)
    """Train this many members with consecutive seeds."""


@dataclass
class RewardModelMethod:
    cfg: RMConfig
    model: torch.nn.Module
    tokenizer: object
    train_items: list
    eval_items: list = field(default_factory=list)

    @staticmethod
    def length(item) -> int:
        """Tokens of the longer of the two rows (for length-grouped batches)."""
        return len(item.prompt_ids) + max(len(item.chosen_ids), len(item.rejected_ids))

    def collate(self, items) -> dict:
        batch = collate_pairs(items, self.tokenizer.pad_token_id)
        if self.cfg.margin:
            batch["margin"] = torch.tensor([float(it.meta.get("margin", 0.0)) for it in items])
        return to_device(batch, self.model.device)

    def loss(self, batch, totals: dict[str, float] | None = None):
        rewards = sequence_scores(self.model, batch["input_ids"], batch["attention_mask"])
        n = rewards.shape[0] // 2
        losses, metrics = bradley_terry_loss(
            chosen_rewards=rewards[:n], rejected_rewards=rewards[n:],
            margin=batch.get("margin"), center_coef=self.cfg.center_coef,
        )
        return batch_mean(losses, totals["examples"] if totals else None), {k: float(v.float().mean()) for k, v in metrics.items()}

    def evaluate(self) -> dict[str, float]:
        """Pairwise accuracy (chosen scored above rejected) and mean loss on held-out pairs."""
        return mean_loss_metrics(self, self.eval_items)

    def save(self, directory: Path) -> None:
        save_run_model(self.model, self.tokenizer, directory, self.cfg)


def build_rm(cfg: RMConfig) -> RewardModelMethod:
    model, tokenizer = load_scalar_head_model(cfg)
    train = sample_examples(load_pairs(cfg.data, tokenizer, cfg), cfg)
    evaluation = load_pairs(cfg.eval_data, tokenizer, cfg) if cfg.eval_data else []
    return RewardModelMethod(cfg, model, tokenizer, train, evaluation)


def run_rm(cfg: RMConfig) -> dict:
    from alignkit.train.loop import fit

    if cfg.ensemble == 1:
        return fit(build_rm(cfg), cfg)
    members = []
    for i in range(cfg.ensemble):
        member = cfg.model_copy(update={"seed": cfg.seed + i, "output_dir": str(Path(cfg.output_dir) / f"member-{i}")})
        members.append(fit(build_rm(member), member))
    return {"members": members}
