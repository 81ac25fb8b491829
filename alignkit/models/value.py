"""Value models for PPO: a scalar head read at every response position, not only the last.

A value model is a scalar-head model (``models/heads.py``: the LM trunk plus a linear ``score``),
started from the policy's weights with a fresh head, or from a trained reward model (InstructGPT's
choice: its head already scores text). Its per-token values line up with the per-token log-probs
of ``models/logprobs.py``::

    position      p0  p1  p2 | r0  r1  r2  pad
    log-probs      0   0   0 | lp  lp  lp   0     lp at r_t = log π(r_t | ..., r_{t-1})
    values         0   0   0 | V   V   V    0     V at r_t  = head(hidden at r_{t-1}): the state before r_t is sampled
"""

from __future__ import annotations

import torch

from alignkit.models.logprobs import _unwrap
from alignkit.models.sharding import one_forward


@one_forward
def token_values(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) values at the response positions (0 elsewhere): V_t is the head applied to the hidden
    state that predicts token t. All inputs (B, T), right-padded."""
    base = _unwrap(model)
    trunk = getattr(base, base.base_model_prefix)
    hidden = trunk(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
    scores = base.score(hidden).squeeze(-1).float()  # (B, T): the value of the state after token t
    values = torch.zeros_like(scores)
    values[:, 1:] = scores[:, :-1]  # shift right: V at token t is read before token t
    return values * response_mask.to(values.dtype)


def load_value_model(path: str, policy_tokenizer, *, dtype=None, trust_remote_code: bool = False):
    """A scalar-head model from ``path`` (a policy: fresh head; a reward model: its trained head).
    Its values must sit on the policy's tokens, so it must share the policy's vocabulary."""
    from alignkit.models.heads import load_scalar_model

    model, tokenizer = load_scalar_model(path, dtype=dtype, trust_remote_code=trust_remote_code)
    if tokenizer.get_vocab() != policy_tokenizer.get_vocab():
        raise ValueError(f"value model {path}: its tokenizer differs from the policy's, so it cannot value the "
                         f"policy's tokens; use value_model=policy")
    return model
