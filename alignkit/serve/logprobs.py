"""Log-probabilities of a finished completion, in OpenAI's ``choices[i].logprobs`` shape.

    {"content": [{"token": " sea", "logprob": -1.23, "bytes": [32, 115, 101, 97],
                  "top_logprobs": [{"token", "logprob", "bytes"}, ...]}, ...], "refusal": None}

One entry per generated token (the EOS token included when the completion ended on it, as
``usage.completion_tokens`` counts it). Computed after generation by one teacher-forced forward of
the model over prompt + completion:

    logprobs = log_softmax(logits[len(prompt) − 1 : −1])       # (T, V), position t predicts token t

the model's own distribution at temperature 1, whatever temperature / top_p the completion was
sampled with and whatever precision the engine decoded in. ``top_logprobs`` are the k most likely
tokens at each position, most likely first (the chosen token need not be among them).
"""

from __future__ import annotations

import functools

import torch


def completion_logprobs(model, tokenizer, prompt_ids: list[int], completion_ids: list[int], top_logprobs: int) -> dict:
    """The ``logprobs`` object of one choice; ``top_logprobs``: alternatives per token (0..20)."""
    if not completion_ids:
        return {"content": [], "refusal": None}
    device = next(model.parameters()).device
    input_ids = torch.tensor([prompt_ids + completion_ids], device=device)  # (1, P + T)
    with torch.no_grad():
        # Only the positions that predict completion tokens: the last P − 1 + T rows would be wasted.
        logits = model(input_ids=input_ids, logits_to_keep=len(completion_ids) + 1).logits[0, :-1]  # (T, V)
    logprobs = logits.float().log_softmax(-1)
    chosen = logprobs.gather(-1, torch.tensor(completion_ids, device=device)[:, None])[:, 0]  # (T,)
    top_values, top_ids = logprobs.topk(top_logprobs, dim=-1) if top_logprobs else (None, None)
    content = []
    for t, token_id in enumerate(completion_ids):
        alternatives = [] if top_ids is None else [
            {**_token(tokenizer, int(i)), "logprob": float(v)} for v, i in zip(top_values[t], top_ids[t])]
        content.append({**_token(tokenizer, token_id), "logprob": float(chosen[t]), "top_logprobs": alternatives})
    return {"content": content, "refusal": None}


def _token(tokenizer, token_id: int) -> dict:
    return {"token": tokenizer.decode([token_id]), "bytes": token_bytes(tokenizer, token_id)}


def token_bytes(tokenizer, token_id: int) -> list[int]:
    """The token's UTF-8 bytes. A byte-level BPE token (GPT-2, Llama 3, SmolLM) may hold part of a
    character, which ``decode`` shows as U+FFFD: its bytes come from the byte-to-symbol table
    instead, so that the bytes of consecutive tokens join into the text. Other tokenizers: the
    bytes of the decoded text."""
    from tokenizers import decoders

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and isinstance(backend.decoder, decoders.ByteLevel) and token_id not in tokenizer.all_special_ids:
        symbols = _byte_of_symbol()
        piece = tokenizer.convert_ids_to_tokens(token_id)
        if all(ch in symbols for ch in piece):
            return [symbols[ch] for ch in piece]
    return list(tokenizer.decode([token_id]).encode("utf-8"))


@functools.cache
def _byte_of_symbol() -> dict[str, int]:
    """GPT-2's byte ↔ printable-symbol table, inverted: printable bytes stand for themselves, the
    other 68 map to U+0100 onwards in byte order (Radford et al. 2019, ``bytes_to_unicode``)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            symbols[chr(256 + extra)] = b
            extra += 1
    return symbols
