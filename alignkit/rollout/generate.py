"""Batched generation from chat prompts with Hugging Face ``generate`` (KV cache on).

A batch is LEFT-padded so every row's last prompt token sits in the same column and new tokens
are appended to all rows in step; the attention mask hides the pads (and transformers derives
position ids from it), so a row's greedy output does not depend on what it was batched with.
Prompts are sorted by length before batching, which keeps padding small, and results come back
in the caller's order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Generation:
    """One prompt and what the model wrote for it."""

    prompt: list[dict]
    """The chat messages that were encoded with the generation prompt."""
    text: str
    """The completion decoded without special tokens, stripped of surrounding whitespace."""
    prompt_ids: list[int]
    """The encoded prompt (chat template + generation prompt), no padding."""
    completion_ids: list[int]
    """Generated tokens up to and including the first EOS (absent when max_new_tokens cut it off);
    no padding. ``prompt_ids + completion_ids`` is exactly the sampled sequence, ready to score."""


def encode_prompt(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of ``messages`` through the chat template, ending with the assistant header."""
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])


def _stop_ids(model, tokenizer) -> set[int]:
    """Every token id that ends a completion: the tokenizer's EOS and the generation config's."""
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if config_eos is not None:
        ids.update(config_eos if isinstance(config_eos, (list, tuple)) else [config_eos])
    return {i for i in ids if i is not None}


def _cut_at_stop(tokens: list[int], stop_ids: set[int]) -> list[int]:
    """Tokens up to and including the first stop token (the padding after it goes)."""
    for i, token in enumerate(tokens):
        if token in stop_ids:
            return tokens[: i + 1]
    return tokens


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _generate_batch(model, tokenizer, prompt_ids: list[list[int]], generate_kwargs: dict) -> list[list[int]]:
    """Raw new tokens (T_new per row, EOS/pad included) for one left-padded batch."""
    saved_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer.pad({"input_ids": prompt_ids}, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = saved_side
    device = _device(model)
    input_ids = batch["input_ids"].to(device)  # (B, T_prompt), pads on the left
    attention_mask = batch["attention_mask"].to(device)
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)  # (B, T_prompt + T_new)
    return out[:, input_ids.shape[1] :].tolist()


def generate(
    model,
    tokenizer,
    prompts: list[list[dict]],
    *,
    max_new_tokens: int = 128,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> list[Generation]:
    """One completion per prompt, in the order given.

    Greedy by default; with ``do_sample=True`` tokens are drawn at ``temperature`` / ``top_p``
    (leave both at 1.0 to sample from the model's own distribution, as a KL estimate needs).
    Sampling is seeded with ``seed`` inside a forked RNG, so the caller's RNG state is untouched
    and a call is reproducible for a fixed batch_size. Works on PEFT-wrapped models (their
    ``generate`` forwards to the base model with the adapters active).
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    encoded = [encode_prompt(tokenizer, messages) for messages in prompts]
    stop_ids = _stop_ids(model, tokenizer)
    generate_kwargs = dict(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=sorted(stop_ids),
        use_cache=True,
    )
    if do_sample:
        generate_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:
        # Say greedy explicitly so a model's generation_config (sampling defaults) cannot override it.
        generate_kwargs.update(temperature=None, top_p=None, top_k=None)

    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))  # short prompts together
    completions: dict[int, list[int]] = {}
    was_training = model.training
    model.eval()
    devices = [_device(model)] if _device(model).type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress) as bar:
            torch.manual_seed(seed)
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                new_tokens = _generate_batch(model, tokenizer, [encoded[i] for i in rows], generate_kwargs)
                for i, tokens in zip(rows, new_tokens):
                    completions[i] = _cut_at_stop(tokens, stop_ids)
                bar.update(len(rows))
    finally:
        model.train(was_training)

    return [
        Generation(
            prompt=prompts[i],
            text=tokenizer.decode(completions[i], skip_special_tokens=True).strip(),
            prompt_ids=encoded[i],
            completion_ids=completions[i],
        )
        for i in range(len(prompts))
    ]
