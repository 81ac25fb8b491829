"""Scores read at chosen positions of a scalar-head model: a process reward model's per-step scores.

The model is the reward model's (``heads.load_scalar_model``: LM trunk + linear ``score`` head);
instead of the last attended token, the head is applied at each step's last token.
"""

from __future__ import annotations

import torch

from alignkit.models.sharding import one_forward


@one_forward
def position_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B, S) scalar scores (logits) at ``positions`` (B, S) of right-padded rows (B, T).

    Padding entries of ``positions`` may hold any valid index (e.g. 0); mask their scores out.
    """
    from alignkit.models.logprobs import _unwrap

    base = _unwrap(model)
    trunk = getattr(base, base.base_model_prefix)
    hidden = trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
    index = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])  # (B, S, H)
    picked = hidden.gather(1, index)  # (B, S, H)
    return base.score(picked).squeeze(-1).float()  # (B, S)
