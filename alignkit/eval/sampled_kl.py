"""KL(policy ‖ reference) on held-out prompts, estimated from the policy's own samples.

Sample responses from the policy at temperature 1 with no top-p / top-k truncation (the
estimator needs y ∼ π itself), score each sampled token under both models, and hand the
per-token log-probs to ``kl_from_samples``. A sample cut off at ``max_new_tokens`` contributes
the KL of its prefix, so the estimate is the KL of the length-capped distribution.
"""

from __future__ import annotations

import torch

from alignkit.eval.metrics import kl_from_samples
from alignkit.rollout.generate import Generation, generate


@torch.no_grad()
def completion_token_logps(model, generations: list[Generation], pad_id: int, *, batch_size: int = 8) -> list[list[float]]:
    """log p(completion token | prefix) under ``model`` for every completion token, one list per
    generation (length len(completion_ids))."""
    from alignkit.models.logprobs import response_token_logps
    from alignkit.train.collate import pad_sequences

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[list[float]] = []
    try:
        for start in range(0, len(generations), batch_size):
            chunk = generations[start : start + batch_size]
            batch = pad_sequences(
                [g.prompt_ids + g.completion_ids for g in chunk], [len(g.prompt_ids) for g in chunk], pad_id
            )
            batch = {k: v.to(device) for k, v in batch.items()}
            token_logps = response_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["response_mask"])  # (B, T)
            response = batch["response_mask"].bool()
            out.extend(token_logps[i][response[i]].tolist() for i in range(len(chunk)))
    finally:
        model.train(was_training)
    return out


def sampled_kl(
    policy,
    reference,
    tokenizer,
    prompts: list[list[dict]],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """{"k1", "k1_stderr", "k3", "k3_stderr", "n"}: KL(policy‖reference) per sequence, one
    policy sample per prompt (repeat prompts for more samples)."""
    samples = generate(
        policy, tokenizer, prompts, max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0, top_p=1.0,
        batch_size=batch_size, seed=seed, progress=progress,
    )
    # Both sides scored by the same forward pass (not the engine's sampling log-probs), so a policy
    # equal to its reference measures exactly zero rather than the round-off between two code paths.
    policy_logps = completion_token_logps(policy, samples, tokenizer.pad_token_id, batch_size=batch_size)
    ref_logps = completion_token_logps(reference, samples, tokenizer.pad_token_id, batch_size=batch_size)
    return kl_from_samples(policy_logps, ref_logps)
