"""Batching encoded examples into padded tensors with response masks."""

from __future__ import annotations

import torch


def pad_sequences(sequences: list[list[int]], response_starts: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token lists into (N, T) tensors.

    response_starts[i] is the index in sequences[i] where its response begins; tokens from there
    to the sequence's end are marked in ``response_mask``.
    """
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    response_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, (seq, start) in enumerate(zip(sequences, response_starts)):
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[i, : len(seq)] = 1
        response_mask[i, start : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}


def collate_pairs(pairs: list, pad_id: int) -> dict[str, torch.Tensor]:
    """(2B, T) batch: rows 0..B-1 are prompt+chosen, rows B..2B-1 prompt+rejected (TRL's layout)."""
    sequences = [p.prompt_ids + p.chosen_ids for p in pairs] + [p.prompt_ids + p.rejected_ids for p in pairs]
    starts = [len(p.prompt_ids) for p in pairs] * 2
    return pad_sequences(sequences, starts, pad_id)


def collate_completions(examples: list, pad_id: int) -> dict[str, torch.Tensor]:
    """(B, T) batch of prompt+completion rows (SFT, KTO)."""
    return pad_sequences(
        [e.prompt_ids + e.completion_ids for e in examples], [len(e.prompt_ids) for e in examples], pad_id
    )


def to_device(batch: dict, device) -> dict:
    """Move every tensor of a batch to ``device`` (a no-op on CPU)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
