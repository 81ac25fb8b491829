"""Shared-prefix packing for preference pairs: the prompt is encoded once per pair.

One row per pair holds ``[prompt | chosen | rejected]``. A 4D attention mask lets chosen tokens
see the prompt and earlier chosen tokens, and rejected tokens see the prompt and earlier
rejected tokens — never each other — and rejected positions restart right after the prompt, so
every token computes exactly what it would in its own ``[prompt | response]`` row. For a
40-token prompt and two 150-token responses that removes one prompt copy and one row of padding
per pair.

Layout per row (P = prompt length, C, R = response lengths)::

    tokens:    p0 .. p{P-1}  c0 .. c{C-1}  r0 .. r{R-1}  pad...
    positions: 0  .. P-1     P  .. P+C-1   P  .. P+R-1   0...
"""

from __future__ import annotations

import torch

from alignkit.models.sharding import one_forward


def pack_pairs(pairs: list, pad_id: int, *, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Pack ``pairs`` (with prompt_ids, chosen_ids, rejected_ids) into one row each.

    Returns input_ids, position_ids (B, T); attention_mask (B, 1, T, T) additive (0 = attend,
    dtype-min = blocked), the form transformers passes through to SDPA unchanged;
    chosen_mask / rejected_mask (B, T) marking each response's tokens.
    """
    width = max(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    n = len(pairs)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    segment = torch.full((n, width), -1, dtype=torch.long)  # 0 prompt, 1 chosen, 2 rejected, -1 pad
    for i, p in enumerate(pairs):
        P, C, R = len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)
        input_ids[i, : P + C + R] = torch.tensor(p.prompt_ids + p.chosen_ids + p.rejected_ids)
        position_ids[i, : P + C] = torch.arange(P + C)
        position_ids[i, P + C : P + C + R] = torch.arange(P, P + R)
        segment[i, :P], segment[i, P : P + C], segment[i, P + C : P + C + R] = 0, 1, 2
    index = torch.arange(width)
    causal = index[None, :, None] >= index[None, None, :]  # (1, T, T): key index <= query index
    q, k = segment[:, :, None], segment[:, None, :]  # (B, T, 1), (B, 1, T)
    # A query sees keys of the prompt and of its own segment; pads see only themselves.
    allowed = causal & (((k == 0) & (q >= 0)) | ((q == k) & (q > 0)))
    allowed |= torch.eye(width, dtype=torch.bool)[None]  # keeps pad rows finite under softmax
    mask = torch.zeros((n, 1, width, width), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "attention_mask": mask,
        "chosen_mask": (segment == 1).long(),
        "rejected_mask": (segment == 2).long(),
        "prompt_lengths": torch.tensor([len(p.prompt_ids) for p in pairs]),
    }


def predictor_index(response_mask: torch.Tensor, prompt_lengths: torch.Tensor) -> torch.Tensor:
    """For each token of a response block, the index of the token that predicts it.

    Inside a block token t is predicted by t-1; the block's first token is predicted by the
    prompt's last token (P-1), which for the rejected block is not the token before it.
    """
    index = torch.arange(response_mask.shape[1], device=response_mask.device).expand_as(response_mask)
    previous = index - 1
    starts = response_mask.bool() & ~torch.nn.functional.pad(response_mask.bool(), (1, 0))[:, :-1]
    return torch.where(starts, (prompt_lengths - 1)[:, None].expand_as(index), previous)


@one_forward
def packed_pair_logps(model, batch: dict, *, chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs (2B,) = (chosen..., rejected...) and lengths (2B,) from packed rows.

    Same values as scoring ``[prompt | chosen]`` and ``[prompt | rejected]`` as separate rows,
    with the LM head applied only at the positions that predict response tokens.
    """
    from alignkit.models.logprobs import decoder_and_head, gather_token_logps

    decoder, lm_head = decoder_and_head(model)
    mask = batch["attention_mask"]
    hidden = decoder(
        input_ids=batch["input_ids"], attention_mask=mask.to(next(lm_head.parameters()).dtype),
        position_ids=batch["position_ids"],
    ).last_hidden_state  # (B, T, H)
    n = hidden.shape[0]
    sums, lengths = [], []
    rows_all, preds_all, targets_all, owners = [], [], [], []
    for block, key in enumerate(("chosen_mask", "rejected_mask")):
        block_mask = batch[key].bool()
        predictors = predictor_index(batch[key], batch["prompt_lengths"])
        rows, cols = block_mask.nonzero(as_tuple=True)
        rows_all.append(rows)
        preds_all.append(predictors[rows, cols])
        targets_all.append(batch["input_ids"][rows, cols])
        owners.append(rows + block * n)  # which of the 2B sequences each token belongs to
        lengths.append(block_mask.sum(-1))
    rows, preds, targets, owner = (torch.cat(x) for x in (rows_all, preds_all, targets_all, owners))
    logps = gather_token_logps(hidden[rows, preds], targets, lm_head, chunk_size=chunk_size)
    sums = torch.zeros(2 * n, dtype=logps.dtype, device=logps.device).index_add(0, owner, logps)
    return sums, torch.cat(lengths).to(logps.dtype)


def pack_completions(examples: list, pad_id: int, max_length: int, *, dtype: torch.dtype = torch.float32) -> dict:
    """Padding-free SFT batches: examples (prompt_ids, completion_ids) packed first-fit into rows
    of at most ``max_length`` tokens, each attending only within itself (block-diagonal causal
    mask) with positions restarting at 0. Same per-token log-probs as one row per example.

    Returns input_ids, position_ids, response_mask (R, T) and attention_mask (R, 1, T, T).
    """
    rows: list[list] = []  # each row: list of examples
    for ex in sorted(examples, key=lambda e: -(len(e.prompt_ids) + len(e.completion_ids))):
        size = len(ex.prompt_ids) + len(ex.completion_ids)
        for row in rows:
            if sum(len(e.prompt_ids) + len(e.completion_ids) for e in row) + size <= max_length:
                row.append(ex)
                break
        else:
            rows.append([ex])
    width = max(sum(len(e.prompt_ids) + len(e.completion_ids) for e in row) for row in rows)
    n = len(rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((n, width), dtype=torch.long)
    response_mask = torch.zeros((n, width), dtype=torch.long)
    segment = torch.full((n, width), -1, dtype=torch.long)  # which example of the row; -1 pad
    for r, row in enumerate(rows):
        at = 0
        for k, ex in enumerate(row):
            P, C = len(ex.prompt_ids), len(ex.completion_ids)
            input_ids[r, at : at + P + C] = torch.tensor(ex.prompt_ids + ex.completion_ids)
            position_ids[r, at : at + P + C] = torch.arange(P + C)
            response_mask[r, at + P : at + P + C] = 1
            segment[r, at : at + P + C] = k
            at += P + C
    index = torch.arange(width)
    causal = index[None, :, None] >= index[None, None, :]
    allowed = causal & (segment[:, :, None] == segment[:, None, :])  # pads form their own block
    mask = torch.zeros((n, 1, width, width), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask, "response_mask": response_mask}
