"""A trained process reward model (``alignkit prm``) as a reward function: one score per solution
from its per-step scores.

A completion is cut into steps at its non-empty lines (``data.steps.split_steps``), encoded the
way the PRM was trained (prompt, then each step + newline, tokenised step by step), and the head
is read at each step's end: p_s = σ(z_s), the model's probability that steps 1..s are all
correct. The solution's score aggregates them (``AGGREGATIONS``): ``min`` over steps (Lightman
et al. 2023 use the product and min; min is the common choice, e.g. Wang et al. 2024, Math-
Shepherd), ``last`` (the score after the final step: what an outcome model trained with
``--label-mode final`` gives), ``mean`` or ``prod``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from alignkit.rewards.protocol import completion_text

AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "min": min,
    "last": lambda probs: probs[-1],
    "mean": lambda probs: sum(probs) / len(probs),
    "prod": math.prod,
}


def aggregate_steps(step_probs: list[float], how: str = "min") -> float | None:
    """One score from per-step probabilities (None for a solution without steps)."""
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown step aggregation {how!r}; choose from {', '.join(AGGREGATIONS)}")
    return AGGREGATIONS[how](step_probs) if step_probs else None


class ProcessRewardModel:
    """Reward function from a PRM: ``fn(prompts, completions, ...) -> aggregated step scores``.

    ``step_scores(prompts, completions)`` gives the per-step probabilities themselves."""

    def __init__(self, model, tokenizer, *, aggregate: str = "min", batch_size: int = 8, max_length: int = 1024,
                 name: str = "prm"):
        aggregate_steps([0.5], aggregate)  # an unknown name fails here, not at the first call
        self.model, self.tokenizer = model, tokenizer
        self.aggregate, self.batch_size, self.max_length, self.name = aggregate, batch_size, max_length, name

    @classmethod
    def from_pretrained(cls, path, *, aggregate: str | None = None, **options) -> "ProcessRewardModel":
        """A model saved by ``alignkit prm`` (its run directory or ``model/``); the aggregation
        defaults to the one in its ``prm.json`` (min for a PRM, last for an ORM)."""
        from alignkit.models.heads import load_scalar_model

        path = Path(path)
        path = path / "model" if (path / "model" / "config.json").exists() else path
        info_file = path / "prm.json"
        if not info_file.exists():
            raise ValueError(f"{path}: no prm.json, so not a model saved by alignkit prm")
        info = json.loads(info_file.read_text())
        model, tokenizer = load_scalar_model(path)
        return cls(model, tokenizer, aggregate=aggregate or info.get("aggregate", "min"), **options)

    def step_scores(self, prompts: list, completions: list) -> list[list[float]]:
        """Per-step probabilities σ(z_s) of each completion ([] for one without any step)."""
        import torch

        from alignkit.data.steps import EncodedSteps, collate_steps, encode_steps, split_steps
        from alignkit.models.step_scores import position_scores

        encoded = []
        for prompt, completion in zip(prompts, completions):
            ids, ends = encode_steps(self.tokenizer, prompt, split_steps(completion_text(completion)), max_length=self.max_length)
            encoded.append(EncodedSteps(ids, ends, [True] * len(ends)))
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))  # less padding
        out: list[list[float]] = [[] for _ in encoded]
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(order), self.batch_size):
                    chunk = [i for i in order[start : start + self.batch_size] if encoded[i].step_ends]
                    if not chunk:
                        continue
                    batch = collate_steps([encoded[i] for i in chunk], pad)
                    probs = torch.sigmoid(position_scores(
                        self.model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                        batch["step_positions"].to(device))).cpu()  # (B, S)
                    for row, i in enumerate(chunk):
                        out[i] = probs[row, : len(encoded[i].step_ends)].tolist()
        finally:
            self.model.train(was_training)
        return out

    def __call__(self, prompts, completions, completion_ids=None, **columns) -> list[float | None]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return [aggregate_steps(probs, self.aggregate) for probs in self.step_scores(prompts, completions)]
