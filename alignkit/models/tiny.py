"""Tiny random models with the real SmolLM2 tokenizer and chat template, built offline, for tests."""

from __future__ import annotations

import torch


def tiny_config(tokenizer, *, hidden_size: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def tiny_model(*, seed: int = 0, tokenizer_from: str = "smollm2-135m-instruct", **config_overrides):
    """(model, tokenizer): a random Llama of a few layers, fp32, eval-free (no dropout)."""
    from transformers import AutoModelForCausalLM

    from alignkit.models.loading import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_from)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(tokenizer, **config_overrides), dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def save_tiny_model(directory, **kwargs) -> str:
    """Write a tiny model + tokenizer as a normal HF directory (for CLI and reload tests)."""
    model, tokenizer = tiny_model(**kwargs)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)
