"""Step-labelled solutions (the PRM800K shape, TRL's "stepwise supervision" columns) and their tokens.

A row is a problem, its solution cut into steps, and one label per step::

    {"prompt": [{"role": "user", "content": "What is 12 + 7 + 15? ..."}],
     "completions": ["12 + 7 = 19", "19 + 15 = 34", "Answer: 34"],
     "labels": [true, true, true]}

(``prompt`` may also be plain text; ``steps`` is accepted for ``completions``.) Encoding puts the
prompt first (chat prompts through the template with the generation prompt, as the policy sees
them), then each step followed by ``STEP_SEPARATOR``, each step tokenised on its own so that a
step's last token — the separator — is a token boundary by construction. A process reward model
reads its score at those positions (``step_ends``): the score after step s sees the problem and
steps 1..s only (causal attention). TRL's PRMTrainer does the same with its ``step_separator``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alignkit.data.errors import DataError, Origin
from alignkit.data.formats import Prompt, check_prompt

STEP_SEPARATOR = "\n"
"""Written after every step; the score after a step is read at the separator's (last) token."""


@dataclass
class StepwiseExample:
    """A problem, its steps and one label per step (True: the step is correct and so are all before it)."""

    prompt: Prompt
    steps: list[str]
    labels: list[bool]
    meta: dict = field(default_factory=dict)


@dataclass
class EncodedSteps:
    """Token ids of prompt + steps and, per step, the position of its last token (its separator)."""

    input_ids: list[int]
    step_ends: list[int]
    labels: list[bool]
    meta: dict = field(default_factory=dict)


def stepwise_record(row: dict, origin: Origin | None = None) -> StepwiseExample:
    """A raw row -> :class:`StepwiseExample`; a :class:`DataError` names the bad field."""
    if not isinstance(row, dict):
        raise DataError(f"expected an object, got {type(row).__name__}")
    if "prompt" not in row:
        raise DataError("missing", field="prompt")
    check_prompt(row["prompt"])
    name = "completions" if "completions" in row else "steps"
    steps, labels = row.get(name), row.get("labels")
    if not isinstance(steps, list) or not steps:
        raise DataError("expected a non-empty list of step texts (also looked for 'steps')", field=name)
    for i, step in enumerate(steps):
        if not isinstance(step, str) or not step.strip():
            raise DataError(f"step {i} must be non-empty text", field=name)
        if STEP_SEPARATOR in step.strip():
            raise DataError(f"step {i} contains the step separator {STEP_SEPARATOR!r}: one step per list item", field=name)
    if not isinstance(labels, list) or len(labels) != len(steps):
        raise DataError(f"expected a list of {len(steps)} labels, one per step", field="labels")
    if not all(isinstance(label, bool) or label in (0, 1) for label in labels):
        raise DataError("labels must be true/false (or 1/0)", field="labels")
    meta = {k: v for k, v in row.items() if k not in ("prompt", name, "labels")}
    return StepwiseExample(row["prompt"], [s.strip() for s in steps], [bool(label) for label in labels], meta)


def read_stepwise(path, *, skip_invalid: bool = False):
    """Step-labelled rows of a file (any format ``read_records`` reads); errors name file, line, field."""
    from alignkit.data.sources import collect_records

    return collect_records(path, stepwise_record, skip_invalid=skip_invalid, source_name=str(path))


def split_steps(text: str) -> list[str]:
    """A free-form solution -> its steps: the non-empty lines (how a sampled solution is scored)."""
    return [line.strip() for line in text.split(STEP_SEPARATOR) if line.strip()]


def encode_steps(tokenizer, prompt: Any, steps: list[str], *, max_length: int | None = None,
                 max_prompt_length: int | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, step_ends): the prompt's ids, then each step's ids with the separator; step_ends[s]
    is the index of step s's last token. Steps that do not fit in ``max_length`` are dropped (whole
    steps, from the end); a prompt longer than ``max_prompt_length`` keeps its end."""
    from alignkit.rollout.engine import encode_prompt

    ids = encode_prompt(tokenizer, prompt)
    if max_prompt_length is not None:
        ids = ids[-max_prompt_length:]
    ends = []
    for step in steps:
        piece = list(tokenizer(step + STEP_SEPARATOR, add_special_tokens=False)["input_ids"])
        if max_length is not None and len(ids) + len(piece) > max_length:
            break
        ids += piece
        ends.append(len(ids) - 1)
    return ids, ends


def encode_stepwise(tokenizer, examples: list[StepwiseExample], *, max_length: int | None = None,
                    max_prompt_length: int | None = None) -> list[EncodedSteps]:
    """Encode examples; one whose first step does not fit is dropped (it has nothing to score)."""
    out = []
    for example in examples:
        ids, ends = encode_steps(tokenizer, example.prompt, example.steps, max_length=max_length,
                                 max_prompt_length=max_prompt_length)
        if ends:
            out.append(EncodedSteps(ids, ends, example.labels[: len(ends)], example.meta))
    return out


def collate_steps(items: list[EncodedSteps], pad_id: int, *, final_only: bool = False) -> dict:
    """Right-padded tensors: input_ids, attention_mask (B, T); step_positions, step_labels,
    step_mask (B, S), S = most steps in the batch. ``final_only``: one "step" per row, the last
    (its label: whether the whole solution is right), which is how an outcome model is trained."""
    import torch

    ends = [it.step_ends[-1:] if final_only else it.step_ends for it in items]
    labels = [[all(it.labels)] if final_only else it.labels for it in items]
    width, steps = max(len(it.input_ids) for it in items), max(len(e) for e in ends)
    batch = {
        "input_ids": torch.full((len(items), width), pad_id, dtype=torch.long),
        "attention_mask": torch.zeros(len(items), width, dtype=torch.long),
        "step_positions": torch.zeros(len(items), steps, dtype=torch.long),
        "step_labels": torch.zeros(len(items), steps),
        "step_mask": torch.zeros(len(items), steps, dtype=torch.long),
    }
    for i, (item, row_ends, row_labels) in enumerate(zip(items, ends, labels)):
        batch["input_ids"][i, : len(item.input_ids)] = torch.tensor(item.input_ids)
        batch["attention_mask"][i, : len(item.input_ids)] = 1
        batch["step_positions"][i, : len(row_ends)] = torch.tensor(row_ends)
        batch["step_labels"][i, : len(row_ends)] = torch.tensor(row_labels, dtype=torch.float32)
        batch["step_mask"][i, : len(row_ends)] = 1
    return batch
