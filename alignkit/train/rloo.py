"""RLOO (Ahmadian et al. 2024, "Back to Basics"; Kool et al. 2019): k samples per prompt, each
sample's baseline the mean KL-penalised return of the prompt's other k − 1 samples, no value model.

The same round as PPO (``train/ppo.py``: rollouts, KL-penalised rewards, the KL controller, the
clipped update over epochs × minibatches); only the advantage differs, and there is no critic::

    return_i = s_i − β · Σ_t KL_i,t          A_i = return_i − (1/(k−1)) Σ_{j≠i} return_j
"""

from __future__ import annotations

from pydantic import Field

from alignkit.train.ppo import RLHFConfig, build_rlhf


class RLOOConfig(RLHFConfig):
    """An RLOO run: k samples per prompt, leave-one-out baseline."""

    num_generations: int = Field(4, ge=2)
    """Samples per prompt (k); the baseline of each is the mean of the other k − 1."""
    normalize_advantages: bool = False
    """Whiten the advantages over the rollout batch (TRL's RLOO default: off)."""

    @property
    def samples_per_prompt(self) -> int:
        return self.num_generations


def run_rloo(cfg: RLOOConfig) -> dict:
    from alignkit.train.loop import fit

    return fit(build_rlhf(cfg, with_value=False), cfg)
