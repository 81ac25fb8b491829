"""Scalar-head models (reward, value) built on any causal LM.

We use transformers' ``AutoModelForSequenceClassification`` with one label — the LM trunk plus a
linear ``score`` head — so a trained reward model saves and reloads with ``from_pretrained`` and
is what TRL's RewardTrainer produces. We read the score at the last *attended* token ourselves:
the stock head finds it by looking for the pad token, which for SmolLM2 is also the end-of-turn
token inside every conversation.
"""

from __future__ import annotations

import os

import torch

from alignkit.models.sharding import one_forward


def load_scalar_model(name_or_path: str | os.PathLike, *, dtype=None, device=None, trust_remote_code: bool = False):
    """A causal LM's trunk with a fresh (or trained) scalar head; pad id taken from the tokenizer.
    Placed like a policy (``default_placement``): the process's GPU in bf16, else the CPU in fp32."""
    from transformers import AutoModelForSequenceClassification

    from alignkit.models.loading import default_placement, load_tokenizer, resolve_model_path

    path = resolve_model_path(name_or_path)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    device, dtype = default_placement(device, dtype)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=dtype, trust_remote_code=trust_remote_code, attn_implementation="sdpa"
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device), tokenizer


@one_forward
def sequence_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) scalar score at each row's last attended token (rows are right-padded)."""
    from alignkit.models.logprobs import _unwrap, trunk_hidden

    base = _unwrap(model)
    trunk = getattr(base, base.base_model_prefix)
    hidden = trunk_hidden(trunk, input_ids, attention_mask, head_weight=base.score.weight)  # (B, T, H)
    last = attention_mask.sum(-1) - 1
    picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)
    return base.score(picked).squeeze(-1).float()
