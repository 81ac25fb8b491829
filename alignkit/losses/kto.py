"""KTO: Kahneman-Tversky Optimisation from unpaired thumbs-up / thumbs-down feedback."""

import torch

__all__ = ["kto_kl_reference", "kto_loss", "kto_reference_point"]


def kto_reference_point(logratio_sum: torch.Tensor | float, count: torch.Tensor | float) -> torch.Tensor:
    """z0 = max(0, Σ_j (log π(y'_j|x_j) - log π_ref(y'_j|x_j)) / count), detached.

    The global form of :func:`kto_kl_reference`: ``logratio_sum`` and ``count`` summed over every
    micro-batch and every process of the step (TRL all-reduces the KL estimate across processes
    before clamping), so every example of the global batch is measured against the same z0.
    """
    return (torch.as_tensor(logratio_sum, dtype=torch.float32) / count).detach().clamp(min=0)


def kto_kl_reference(*, policy_kl_logps: torch.Tensor, ref_kl_logps: torch.Tensor) -> torch.Tensor:
    """The KTO reference point z0: a batch estimate of KL(π || π_ref), detached and clamped at 0.

    z0 = max(0, mean_j [log π(y'_j | x_j) - log π_ref(y'_j | x_j)])

    where y'_j is a completion paired with the *wrong* prompt x_j (TRL shifts the completions of a batch by
    one: example j gets the completion of example j-1), so z0 does not reward the matched completions.
    Shapes: ``[B]`` summed log-probs of the mismatched pairs -> scalar. This is the one-batch form;
    under gradient accumulation or data parallelism sum ``policy_kl_logps - ref_kl_logps`` and the
    counts over the global batch and call :func:`kto_reference_point` (``alignkit.train.kto`` does).
    """
    return (policy_kl_logps - ref_kl_logps).mean().detach().clamp(min=0)


def kto_loss(
    *,
    policy_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    is_desirable: torch.Tensor,
    kl_reference: torch.Tensor | float,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """KTO loss (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization", Eq. 7).

    r_i = log π(y_i|x_i) - log π_ref(y_i|x_i)
    desirable:   loss_i = λ_D · (1 - σ(β·(r_i - z0)))
    undesirable: loss_i = λ_U · (1 - σ(β·(z0 - r_i)))

    The paper writes L = E[λ_y - v(x, y)] with v = λ_D σ(β(r - z0)) or λ_U σ(β(z0 - r)); we follow TRL's
    ``loss_type="kto"`` which puts the weight outside, λ·(1 - σ(·)) (the same gradient). Both weights default
    to 1 as in TRL; the paper advises λ_D·n_D / (λ_U·n_U) ∈ [1, 4/3].

    Args:
        policy_logps: ``[B]`` summed completion log-probs under the policy.
        ref_logps: ``[B]`` the same under the reference model.
        is_desirable: ``[B]`` bool, True for thumbs-up.
        kl_reference: scalar z0 from :func:`kto_kl_reference` (detached, ≥ 0; 0 for an unpaired APO-like run).
        beta: β (TRL default 0.1).
        desirable_weight, undesirable_weight: λ_D, λ_U.

    Returns:
        ``(losses [B], metrics)`` with losses in input order (TRL's mean over the batch is ``losses.mean()``).
        Metrics (detached): ``kl``; ``rewards/chosen`` and ``logps/chosen`` (means of β·r and log π over the
        desirable examples) only when the batch has one; likewise ``rewards/rejected``, ``logps/rejected``;
        ``rewards/margins`` only when it has both, as TRL logs them.
    """
    is_desirable = is_desirable.to(torch.bool)
    kl_reference = torch.as_tensor(kl_reference, dtype=policy_logps.dtype, device=policy_logps.device)
    logratios = policy_logps - ref_logps
    desirable_losses = desirable_weight * (1 - torch.sigmoid(beta * (logratios - kl_reference)))
    undesirable_losses = undesirable_weight * (1 - torch.sigmoid(beta * (kl_reference - logratios)))
    losses = torch.where(is_desirable, desirable_losses, undesirable_losses)

    rewards = beta * logratios.detach()
    metrics = {"kl": kl_reference.detach()}
    for label, selected in (("chosen", is_desirable), ("rejected", ~is_desirable)):
        if selected.any():
            metrics[f"rewards/{label}"] = rewards[selected].mean()
            metrics[f"logps/{label}"] = policy_logps.detach()[selected].mean()
    if "rewards/chosen" in metrics and "rewards/rejected" in metrics:
        metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
    return losses, metrics
