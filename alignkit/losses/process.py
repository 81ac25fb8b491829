"""Process reward models: binary cross-entropy on the score read after each step."""

import torch
import torch.nn.functional as F

__all__ = ["process_reward_loss"]


def process_reward_loss(
    *, step_logits: torch.Tensor, step_labels: torch.Tensor, step_mask: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-step binary cross-entropy of a process reward model (PRM).

    loss_{i,s} = −[ y_{i,s} · log σ(z_{i,s}) + (1 − y_{i,s}) · log(1 − σ(z_{i,s})) ] · m_{i,s}

    where z_{i,s} is the score read at the last token of step s of solution i and y_{i,s} ∈ {0, 1}
    its label (1: the step and all before it are correct). Lightman et al. 2023 ("Let's Verify
    Step by Step", PRM800K) train the same per-step classifier; TRL's PRMTrainer is this loss on
    the step-separator tokens. An outcome reward model (ORM) is the same loss with one "step" per
    solution: the last step's end, labelled with the final answer's correctness.

    Returns the *unreduced* per-step losses: the method divides their sum by the number of
    labelled steps in the global batch (``alignkit.losses.reduction``), i.e. a mean over steps.

    Args:
        step_logits: ``[B, S]`` scores (logits) at each step's end; padding anywhere.
        step_labels: ``[B, S]`` labels in {0, 1} (float or bool).
        step_mask: ``[B, S]`` 1 on real steps, 0 on padding.

    Returns:
        ``(losses [B, S], metrics)``: losses are 0 on padding; metrics are detached means over
        real steps: ``step_accuracy`` (σ(z) > 0.5 agrees with y), ``score/correct`` and
        ``score/incorrect`` (mean σ(z) on steps labelled 1 and 0; 0 when there are none).
    """
    mask = step_mask.to(step_logits.dtype)
    labels = step_labels.to(step_logits.dtype)
    losses = F.binary_cross_entropy_with_logits(step_logits, labels, reduction="none") * mask
    with torch.no_grad():
        probs = torch.sigmoid(step_logits)
        n = mask.sum().clamp(min=1)
        agree = ((probs > 0.5).to(labels.dtype) == labels).to(mask.dtype) * mask
        correct, incorrect = labels * mask, (1 - labels) * mask
        metrics = {
            "step_accuracy": agree.sum() / n,
            "score/correct": (probs * correct).sum() / correct.sum().clamp(min=1),
            "score/incorrect": (probs * incorrect).sum() / incorrect.sum().clamp(min=1),
        }
    return losses, metrics
