"""Paired direct-preference losses: the DPO family, SimPO and ORPO.

Every loss is a keyword-only function of per-example tensors drawn from one fixed vocabulary
(:data:`PREFERENCE_ARGUMENTS`):

* ``policy_chosen_logps``, ``policy_rejected_logps``: ``[B]`` SUM of response-token log-probs under the policy.
* ``ref_chosen_logps``, ``ref_rejected_logps``: ``[B]`` sums under the frozen reference model.
* ``chosen_lengths``, ``rejected_lengths``: ``[B]`` response-token counts (float or long). Losses that use
  average log-probs (IPO as in TRL, SimPO, ORPO) divide inside, so callers always pass sums.
* ``chosen_nll``: NLL of the chosen responses, ``[B]`` or a scalar (see :func:`rpo_loss`, :func:`orpo_loss`).
* hyper-parameters ``beta``, ``label_smoothing``, ``rpo_alpha``, ``gamma``, ``orpo_lambda``.

Each returns ``(losses [B], metrics)``; the training loss is ``losses.mean()`` (or a global-batch
normalisation of ``losses.sum()``). Metrics are detached batch means with TRL's names: ``rewards/chosen``,
``rewards/rejected``, ``rewards/margins``, ``rewards/accuracies``, ``logps/chosen``, ``logps/rejected``.

A trainer picks a loss by name from :data:`PREFERENCE_LOSSES` and calls it through
:func:`call_preference_loss`, which passes each loss only the arguments its signature names.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "PREFERENCE_ARGUMENTS",
    "PREFERENCE_LOSSES",
    "PreferenceLoss",
    "call_preference_loss",
    "cdpo_loss",
    "dpo_loss",
    "hinge_loss",
    "ipo_loss",
    "orpo_loss",
    "rdpo_loss",
    "rpo_loss",
    "simpo_loss",
]

Tensor = torch.Tensor
Metrics = dict[str, Tensor]


def _paired_metrics(
    chosen_rewards: Tensor, rejected_rewards: Tensor, chosen_logps: Tensor, rejected_logps: Tensor
) -> Metrics:
    """TRL's logged statistics: batch means of the (implicit) rewards and of the log-probs."""
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "logps/chosen": chosen_logps.detach().mean(),
        "logps/rejected": rejected_logps.detach().mean(),
    }


def _average(logps: Tensor, lengths: Tensor) -> Tensor:
    """Sum of log-probs [B] -> mean per response token [B] (a zero length counts as 1, as in TRL)."""
    return logps / torch.as_tensor(lengths, device=logps.device).to(logps.dtype).clamp(min=1.0)


def _dpo_parts(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """Log-ratios, implicit rewards β·log(π/π_ref) [B] and the DPO logit β·Δ [B]."""
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    metrics = _paired_metrics(
        beta * chosen_logratios, beta * rejected_logratios, policy_chosen_logps, policy_rejected_logps
    )
    return chosen_logratios, rejected_logratios, beta * (chosen_logratios - rejected_logratios), metrics


def dpo_loss(*, policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor,
             ref_rejected_logps: Tensor, beta: float) -> tuple[Tensor, Metrics]:
    """DPO, sigmoid form (Rafailov et al. 2023, Eq. 7). TRL ``loss_type="sigmoid"`` (TRL default β = 0.1).

    loss_i = -log σ(β·[(log π(y_w) - log π_ref(y_w)) - (log π(y_l) - log π_ref(y_l))])

    Shapes: all log-probs ``[B]`` sums over response tokens -> losses ``[B]``.
    Implicit rewards (metrics): β·(log π - log π_ref) of each response.
    """
    _, _, logits, metrics = _dpo_parts(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    return -F.logsigmoid(logits), metrics


def cdpo_loss(*, policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor,
              ref_rejected_logps: Tensor, beta: float, label_smoothing: float) -> tuple[Tensor, Metrics]:
    """Conservative DPO: DPO with label smoothing ε (Mitchell 2023, "A note on DPO with noisy preferences").

    loss_i = -(1 - ε)·log σ(β·Δ_i) - ε·log σ(-β·Δ_i),   Δ_i = chosen log-ratio - rejected log-ratio.

    The label is assumed flipped with probability ε; ε = 0 is DPO. Shapes: ``[B]`` -> ``[B]``.
    TRL note: TRL ≤ 0.2x applied ``label_smoothing`` inside ``loss_type="sigmoid"``; in TRL 1.16 the DPO
    ``"sigmoid"`` loss ignores it and ``"robust"`` is a different loss (:func:`rdpo_loss`). The same cDPO
    expression is TRL 1.16's CPO ``"sigmoid"`` loss applied to log-ratios, which is what our parity test runs.
    """
    _, _, logits, metrics = _dpo_parts(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits), metrics


def rdpo_loss(*, policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor,
              ref_rejected_logps: Tensor, beta: float, label_smoothing: float) -> tuple[Tensor, Metrics]:
    """Robust DPO (Chowdhury et al. 2024, "Provably Robust DPO"). TRL ``loss_type="robust"``.

    loss_i = [-(1 - ε)·log σ(β·Δ_i) + ε·log σ(-β·Δ_i)] / (1 - 2ε),   0 ≤ ε < 1/2 the flip rate.

    An unbiased estimate of the clean-label DPO loss under flips at rate ε (unlike cDPO, which is biased
    towards ε). Shapes: ``[B]`` -> ``[B]``.
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"rdpo needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
    _, _, logits, metrics = _dpo_parts(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    flipped = label_smoothing * F.logsigmoid(-logits)
    losses = (-(1 - label_smoothing) * F.logsigmoid(logits) + flipped) / (1 - 2 * label_smoothing)
    return losses, metrics


def ipo_loss(*, policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor,
             ref_rejected_logps: Tensor, chosen_lengths: Tensor, rejected_lengths: Tensor,
             beta: float) -> tuple[Tensor, Metrics]:
    """IPO (Azar et al. 2023, "A General Theoretical Paradigm...", Eq. 17), β playing the role of τ.

    loss_i = (h_i - 1/(2β))²,   h_i = (log π(y_w) - log π_ref(y_w))/|y_w| - (log π(y_l) - log π_ref(y_l))/|y_l|

    Convention: the paper writes h with sequence log-ratios; we follow TRL's ``loss_type="ipo"`` and divide
    each log-ratio by its response length (TRL confirmed this with the IPO authors; without it the squared
    loss grows with length). Callers pass sums and lengths. Shapes: ``[B]`` -> ``[B]``.
    Metrics as TRL: the implicit rewards use the *summed* log-ratios, β·(log π - log π_ref).
    """
    chosen_logratios, rejected_logratios, _, metrics = _dpo_parts(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    h = _average(chosen_logratios, chosen_lengths) - _average(rejected_logratios, rejected_lengths)
    return (h - 1 / (2 * beta)) ** 2, metrics


def hinge_loss(*, policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor,
               ref_rejected_logps: Tensor, beta: float) -> tuple[Tensor, Metrics]:
    """Hinge / SLiC calibration loss (Zhao et al. 2023, SLiC-HF), TRL ``loss_type="hinge"``.

    loss_i = max(0, 1 - β·Δ_i),   Δ_i = chosen log-ratio - rejected log-ratio.

    Convention: SLiC-HF uses max(0, δ - log π(y_w) + log π(y_l)) without a reference; we follow TRL and
    DPO's reading (Rafailov et al. 2023, §6): log-ratios against the reference and margin δ = 1/β
    (β·max(0, 1/β - Δ) = max(0, 1 - β·Δ)). Shapes: ``[B]`` -> ``[B]``.
    """
    _, _, logits, metrics = _dpo_parts(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    return torch.relu(1 - logits), metrics


def rpo_loss(*, policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor,
             ref_rejected_logps: Tensor, chosen_nll: Tensor, beta: float, rpo_alpha: float) -> tuple[Tensor, Metrics]:
    """RPO: DPO plus an NLL term on the chosen response (Pang et al. 2024, "Iterative Reasoning
    Preference Optimization").

    loss_i = -log σ(β·Δ_i) + α · NLL_chosen

    ``chosen_nll``: a scalar = token-mean NLL over all chosen response tokens of the batch (TRL's convention:
    ``loss_type=["sigmoid", "sft"]``, ``loss_weights=[1, α]``; compute it with :func:`sft_loss`), or ``[B]``
    per-example length-normalised NLL -log π(y_w)/|y_w| (the paper's form). A scalar is broadcast to ``[B]``,
    so ``losses.mean()`` equals TRL's loss. Shapes: ``[B]`` -> ``[B]``.
    """
    chosen_nll = torch.as_tensor(chosen_nll, dtype=policy_chosen_logps.dtype, device=policy_chosen_logps.device)
    losses, metrics = dpo_loss(
        policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps, beta=beta,
    )
    metrics["nll_loss"] = chosen_nll.detach().mean()
    return losses + rpo_alpha * chosen_nll, metrics


def simpo_loss(*, policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, chosen_lengths: Tensor,
               rejected_lengths: Tensor, beta: float, gamma: float,
               label_smoothing: float = 0.0) -> tuple[Tensor, Metrics]:
    """SimPO (Meng et al. 2024, Eq. 6): reference-free, length-normalised, with target margin γ.

    loss_i = -log σ(β/|y_w|·log π(y_w) - β/|y_l|·log π(y_l) - γ)     (ε-smoothed as cDPO when ε > 0)

    ``gamma`` is the paper's γ, which is TRL's ``simpo_gamma`` (CPOTrainer ``loss_type="simpo"``;
    TRL defaults β = 0.1, γ = 0.5; the paper tunes β ∈ [2, 10], γ/β ∈ [0.3, 1]). Not ``gamma_beta_ratio``.
    Shapes: ``[B]`` sums and lengths -> ``[B]``. Metrics as TRL: rewards = β·mean token log-prob,
    ``logps/*`` = mean token log-probs.
    """
    chosen_avg = _average(policy_chosen_logps, chosen_lengths)
    rejected_avg = _average(policy_rejected_logps, rejected_lengths)
    logits = beta * (chosen_avg - rejected_avg) - gamma
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return losses, _paired_metrics(beta * chosen_avg, beta * rejected_avg, chosen_avg, rejected_avg)


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2 (Mächler 2012)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(*, policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, chosen_lengths: Tensor,
              rejected_lengths: Tensor, chosen_nll: Tensor, orpo_lambda: float) -> tuple[Tensor, Metrics]:
    """ORPO (Hong et al. 2024, Eqs. 4-7): NLL plus an odds-ratio penalty, reference-free.

    loss_i = NLL_chosen - λ·log σ(log odds(y_w) - log odds(y_l)),   odds(y) = P(y)/(1 - P(y)),
    with log P(y) the mean token log-prob (so log odds = p̄ - log(1 - exp p̄)).

    ``orpo_lambda`` is λ, which TRL's ORPOConfig calls ``beta`` (default 0.1). ``chosen_nll`` is a scalar
    or ``[B]`` NLL of the chosen responses; the paper's L_SFT is the response-token NLL, while TRL's
    ORPOTrainer averages the cross-entropy over prompt *and* response tokens of the chosen sequences; either is
    accepted, the trainer decides. Shapes: ``[B]`` -> ``[B]``. Metrics as TRL: rewards = λ·mean token log-prob,
    ``logps/*`` = mean token log-probs, plus ``log_odds_ratio`` (mean log σ(·)), ``log_odds_chosen`` and ``nll_loss``.
    """
    chosen_nll = torch.as_tensor(chosen_nll, device=policy_chosen_logps.device)
    chosen_avg = _average(policy_chosen_logps.float(), chosen_lengths)
    rejected_avg = _average(policy_rejected_logps.float(), rejected_lengths)
    log_odds = (chosen_avg - rejected_avg) - (_log1mexp(chosen_avg) - _log1mexp(rejected_avg))
    log_sigmoid_odds = F.logsigmoid(log_odds)
    metrics = _paired_metrics(orpo_lambda * chosen_avg, orpo_lambda * rejected_avg, chosen_avg, rejected_avg)
    metrics.update({"log_odds_ratio": log_sigmoid_odds.detach().mean(), "log_odds_chosen": log_odds.detach().mean(),
                    "nll_loss": chosen_nll.detach().mean()})
    return chosen_nll - orpo_lambda * log_sigmoid_odds, metrics


# --- name -> loss table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreferenceLoss:
    """A preference loss and what a trainer must compute before calling it."""

    fn: Callable[..., tuple[Tensor, Metrics]]
    """The loss function (keyword-only, arguments from :data:`PREFERENCE_ARGUMENTS`)."""
    needs_reference: bool
    """Takes ``ref_chosen_logps`` / ``ref_rejected_logps``: a reference model must be loaded or precomputed."""
    length_normalized: bool
    """Takes ``chosen_lengths`` / ``rejected_lengths`` and averages log-probs over response tokens."""
    needs_chosen_nll: bool
    """Takes ``chosen_nll``: the trainer computes the NLL of the chosen responses."""


PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {
    "dpo": PreferenceLoss(dpo_loss, needs_reference=True, length_normalized=False, needs_chosen_nll=False),
    "cdpo": PreferenceLoss(cdpo_loss, needs_reference=True, length_normalized=False, needs_chosen_nll=False),
    "rdpo": PreferenceLoss(rdpo_loss, needs_reference=True, length_normalized=False, needs_chosen_nll=False),
    "ipo": PreferenceLoss(ipo_loss, needs_reference=True, length_normalized=True, needs_chosen_nll=False),
    "hinge": PreferenceLoss(hinge_loss, needs_reference=True, length_normalized=False, needs_chosen_nll=False),
    "rpo": PreferenceLoss(rpo_loss, needs_reference=True, length_normalized=False, needs_chosen_nll=True),
    "simpo": PreferenceLoss(simpo_loss, needs_reference=False, length_normalized=True, needs_chosen_nll=False),
    "orpo": PreferenceLoss(orpo_loss, needs_reference=False, length_normalized=True, needs_chosen_nll=True),
}

PREFERENCE_ARGUMENTS: frozenset[str] = frozenset({
    "policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps",
    "chosen_lengths", "rejected_lengths", "chosen_nll",
    "beta", "label_smoothing", "rpo_alpha", "gamma", "orpo_lambda",
})


def call_preference_loss(name: str, available: dict[str, Any], hparams: dict[str, Any]) -> tuple[Tensor, Metrics]:
    """Call ``PREFERENCE_LOSSES[name].fn`` with the subset of ``available`` (tensors) and ``hparams`` that its
    signature names.

    The trainer computes the tensors the table entry asks for and hands over everything it has; extra
    entries are ignored, so one config can carry ``beta`` and ``gamma`` for every loss. Names outside
    :data:`PREFERENCE_ARGUMENTS` raise ``KeyError`` (catches typos); a missing required argument raises
    ``TypeError`` naming it; ``hparams`` wins over ``available`` on a clash.
    """
    if name not in PREFERENCE_LOSSES:
        raise KeyError(f"unknown preference loss {name!r}; choose from {sorted(PREFERENCE_LOSSES)}")
    supplied = {**available, **hparams}
    unknown = set(supplied) - PREFERENCE_ARGUMENTS
    if unknown:
        raise KeyError(f"not in the preference argument vocabulary: {sorted(unknown)}")
    parameters = inspect.signature(PREFERENCE_LOSSES[name].fn).parameters
    kwargs = {key: value for key, value in supplied.items() if key in parameters}
    missing = [p for p, spec in parameters.items() if spec.default is inspect.Parameter.empty and p not in kwargs]
    if missing:
        raise TypeError(f"preference loss {name!r} needs {missing}")
    return PREFERENCE_LOSSES[name].fn(**kwargs)
