"""What a rollout engine returns: sampled rows, their sampling log-probs and why each row ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

FinishReason = Literal["eos", "stop", "length"]


@dataclass
class Rollouts:
    """One row per sample, grouped by prompt: rows ``i·n .. i·n + n − 1`` are prompt i's n samples.

    ``completion_ids[r]`` is exactly what was sampled after ``prompt_ids[r]`` (up to and including
    the EOS token when the row ended on one; the tokens of a stop string included), so
    ``prompt_ids[r] + completion_ids[r]`` can be scored teacher-forced, and ``logprobs[r][t]`` is
    the sampling log-prob of ``completion_ids[r][t]`` (see ``sampling.sample_tokens``).
    """

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    logprobs: list[list[float]]
    finish_reasons: list[FinishReason]
    texts: list[str]
    """Decoded completions without special tokens, cut before a matched stop string."""
    prompt_index: list[int]
    """Which input prompt each row answers."""
    n: int = 1
    timings: dict = field(default_factory=dict)
    """Seconds spent per phase (e.g. prefill, decode), for logging."""

    def __len__(self) -> int:
        return len(self.completion_ids)

    @property
    def num_tokens(self) -> int:
        """Completion tokens generated over all rows."""
        return sum(len(c) for c in self.completion_ids)

    def to_batch(self, pad_id: int) -> dict[str, torch.Tensor]:
        """Right-padded tensors for scoring and training, each (R, T) with T = longest prompt + completion:

        input_ids       prompt then completion tokens, then ``pad_id``
        attention_mask  1 on real tokens
        response_mask   1 on completion tokens (the positions a policy-gradient loss sums over)
        logprobs        the sampling log-prob at each completion token, 0 elsewhere
        """
        rows = len(self)
        width = max(len(p) + len(c) for p, c in zip(self.prompt_ids, self.completion_ids))
        input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros(rows, width, dtype=torch.long)
        response_mask = torch.zeros(rows, width, dtype=torch.long)
        logprobs = torch.zeros(rows, width)
        for r, (prompt, completion, lps) in enumerate(zip(self.prompt_ids, self.completion_ids, self.logprobs)):
            start, end = len(prompt), len(prompt) + len(completion)
            input_ids[r, :end] = torch.tensor(prompt + completion, dtype=torch.long)
            attention_mask[r, :end] = 1
            response_mask[r, start:end] = 1
            logprobs[r, start:end] = torch.tensor(lps)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask, "logprobs": logprobs}
