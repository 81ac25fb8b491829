"""Process reward model (PRM): a scalar head on the LM, read after every step of a solution.

Data: step-labelled solutions (``alignkit.data.steps``; the bundled ``arith-steps``). A step is
one list item; the prompt, then each step followed by a newline, is one sequence, and the score
after step s is the head at step s's newline (causal: it has seen steps 1..s). Loss: per-step
binary cross-entropy (``losses.process_reward_loss``), a mean over the labelled steps of the
global batch. ``--label-mode final`` trains the outcome reward model (ORM) the comparison needs:
the same model, data and loss, with one label per solution (all its steps correct) read at the
last step's end.

The saved model is the reward model's format (``AutoModelForSequenceClassification``, one label)
plus ``prm.json`` (separator, label mode, default aggregation), which ``alignkit best-of-n`` and
``alignkit.rewards.ProcessRewardModel`` read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, model_validator

from alignkit.data.steps import STEP_SEPARATOR, collate_steps, encode_stepwise, read_stepwise
from alignkit.losses import process_reward_loss
from alignkit.models.step_scores import position_scores
from alignkit.train.collate import to_device
from alignkit.train.eval_loop import mean_loss_metrics
from alignkit.train.rm import ScalarHeadConfig, load_scalar_head_model
from alignkit.train.setup import data_files, sample_examples, save_run_model

PRM_FILE = "prm.json"


class PRMConfig(ScalarHeadConfig):
    """A process (or outcome) reward-model run on step-labelled solutions."""

    data: str | None = "arith-steps"
    """Step-labelled solutions (prompt, completions = steps, labels) or the bundled `arith-steps`."""
    lr: float = Field(1e-5, gt=0)
    """Peak learning rate."""
    batch_size: int = Field(8, ge=1)
    """Solutions per optimizer step."""
    label_mode: Literal["step", "final"] = "step"
    """step: a label after every step (PRM); final: one label per solution at its end (the ORM baseline)."""

    @model_validator(mode="after")
    def _whole_solutions(self):
        if self.max_completion_length is not None:  # encode_stepwise keeps every labelled step or cuts from the end
            raise ValueError("max_completion_length would cut a solution's labelled steps; use max_length")
        return self


@dataclass
class ProcessRewardMethod:
    cfg: PRMConfig
    model: torch.nn.Module
    tokenizer: object
    train_items: list
    eval_items: list = field(default_factory=list)

    @staticmethod
    def length(item) -> int:
        return len(item.input_ids)

    def collate(self, items) -> dict:
        batch = collate_steps(items, self.tokenizer.pad_token_id, final_only=self.cfg.label_mode == "final")
        return to_device(batch, self.model.device)

    @staticmethod
    def batch_totals(batch) -> dict[str, float]:
        """Labelled steps: the loss is a mean over every step of the global batch."""
        return {"steps": float(batch["step_mask"].sum())}

    def loss(self, batch, totals: dict[str, float] | None = None):
        logits = position_scores(self.model, batch["input_ids"], batch["attention_mask"], batch["step_positions"])
        losses, metrics = process_reward_loss(step_logits=logits, step_labels=batch["step_labels"], step_mask=batch["step_mask"])
        normalizer = totals["steps"] if totals else batch["step_mask"].sum().clamp(min=1)
        return losses.sum() / normalizer, {k: float(v) for k, v in metrics.items()}

    def evaluate(self) -> dict[str, float]:
        """Held-out loss, step accuracy and mean scores of correct / incorrect steps."""
        return mean_loss_metrics(self, self.eval_items)

    def save(self, directory: Path) -> None:
        from alignkit.models.sharding import is_main_process

        save_run_model(self.model, self.tokenizer, directory, self.cfg)
        if not is_main_process():  # with --fsdp every process saves (a gather); one writes
            return
        info = {"step_separator": STEP_SEPARATOR, "label_mode": self.cfg.label_mode,
                "aggregate": "min" if self.cfg.label_mode == "step" else "last"}
        (Path(directory) / PRM_FILE).write_text(json.dumps(info, indent=2) + "\n")


def load_steps(spec: str, tokenizer, cfg: PRMConfig) -> list:
    from alignkit.data import DataError

    examples = []
    for path in data_files(spec):
        result = read_stepwise(path, skip_invalid=cfg.skip_invalid)
        examples += result.records
    items = encode_stepwise(tokenizer, examples, max_length=cfg.max_length, max_prompt_length=cfg.max_prompt_length)
    if not items:
        raise DataError("no step-labelled solution fits in max_length", source=spec)
    return items


def build_prm(cfg: PRMConfig) -> ProcessRewardMethod:
    if cfg.data is None:
        raise ValueError("no training data: pass --data FILE of step-labelled solutions (or the bundled arith-steps)")
    model, tokenizer = load_scalar_head_model(cfg)
    train = sample_examples(load_steps(cfg.data, tokenizer, cfg), cfg)
    evaluation = load_steps(cfg.eval_data, tokenizer, cfg) if cfg.eval_data else []
    return ProcessRewardMethod(cfg, model, tokenizer, train, evaluation)


def run_prm(cfg: PRMConfig) -> dict:
    from alignkit.train.loop import fit

    return fit(build_prm(cfg), cfg)
