"""alignkit.losses: pure functions of tensors (torch only) for every alignment method.

Conventions:
* every loss is keyword-only and states its formula, shapes and paper in its docstring;
* sequence-level losses (reward, preference, KTO) return ``(per_example_losses [B], metrics)``;
  token-level losses (SFT, PPO, GRPO) return ``(scalar_loss, metrics)``, reduced by
  :mod:`alignkit.losses.reduction` because the reduction is part of the method (GRPO vs DAPO vs Dr. GRPO);
* metrics are ``dict[str, Tensor]`` of detached scalars (any per-example entry says so in its name);
* variants are chosen from name -> function tables (``PREFERENCE_LOSSES``, ``TOKEN_AGGREGATIONS``,
  ``KL_ESTIMATORS``, ``ENSEMBLE_MODES``, ``GRPO_LOSS_TYPES``), never by an if/elif chain.
"""

from alignkit.losses.grpo import (
    GRPO_LOSS_TYPES,
    IMPORTANCE_LEVELS,
    group_advantages,
    grpo_loss,
    rloo_advantages,
    truncated_importance_weights,
)
from alignkit.losses.kl import KL_ESTIMATORS, kl_penalty
from alignkit.losses.kto import kto_kl_reference, kto_loss, kto_reference_point
from alignkit.losses.ppo import (
    AdaptiveKLController,
    FixedKLController,
    explained_variance,
    gae_advantages,
    kl_penalized_rewards,
    ppo_policy_loss,
    ppo_value_loss,
    whiten,
)
from alignkit.losses.preference import (
    PREFERENCE_ARGUMENTS,
    PREFERENCE_LOSSES,
    PreferenceLoss,
    call_preference_loss,
    cdpo_loss,
    dpo_loss,
    hinge_loss,
    ipo_loss,
    orpo_loss,
    rdpo_loss,
    rpo_loss,
    simpo_loss,
)
from alignkit.losses.process import process_reward_loss
from alignkit.losses.reduction import (
    TOKEN_AGGREGATIONS,
    aggregate_token_losses,
    batch_mean,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    sum_across_processes,
)
from alignkit.losses.reward import ENSEMBLE_MODES, bradley_terry_loss, ensemble_reward
from alignkit.losses.sft import sft_loss

__all__ = [
    "ENSEMBLE_MODES",
    "GRPO_LOSS_TYPES",
    "IMPORTANCE_LEVELS",
    "KL_ESTIMATORS",
    "PREFERENCE_ARGUMENTS",
    "PREFERENCE_LOSSES",
    "TOKEN_AGGREGATIONS",
    "AdaptiveKLController",
    "FixedKLController",
    "PreferenceLoss",
    "aggregate_token_losses",
    "batch_mean",
    "bradley_terry_loss",
    "call_preference_loss",
    "cdpo_loss",
    "dpo_loss",
    "ensemble_reward",
    "explained_variance",
    "gae_advantages",
    "group_advantages",
    "grpo_loss",
    "hinge_loss",
    "ipo_loss",
    "kl_penalized_rewards",
    "kl_penalty",
    "kto_kl_reference",
    "kto_loss",
    "kto_reference_point",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "orpo_loss",
    "ppo_policy_loss",
    "ppo_value_loss",
    "process_reward_loss",
    "rdpo_loss",
    "rloo_advantages",
    "rpo_loss",
    "sft_loss",
    "simpo_loss",
    "sum_across_processes",
    "truncated_importance_weights",
    "whiten",
]
