"""Numerical faults in a training step: a non-finite loss, gradient or reward, or a loss spike.

The default stops before the optimizer step, so the weights are those of the last good step
(and of the last checkpoint, if it was just written). ``on_fault="skip"`` instead drops the step
(no optimizer update; data and schedule move on), counts it, logs why, and stops only after
``MAX_CONSECUTIVE_SKIPS`` faulty steps in a row: a run that is broken, not unlucky.

A spike is a loss more than ``loss_spike_zscore`` standard deviations above the mean of the last
``SPIKE_WINDOW`` good steps (needs ``SPIKE_MIN_HISTORY`` of them first): the sign of the loss
does not matter (GRPO and SimPO losses can be negative), only its jump.
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)

SPIKE_WINDOW = 50
SPIKE_MIN_HISTORY = 10
MAX_CONSECUTIVE_SKIPS = 10


class StepFaultError(RuntimeError):
    """Raised before the optimizer step of a faulty step; weights are untouched."""


class NonFiniteLossError(StepFaultError):
    """A loss, gradient or reward was NaN/inf."""


class LossSpikeError(StepFaultError):
    """The loss jumped far above its recent mean."""


def non_finite_rewards(metrics: dict[str, float]) -> str | None:
    """A reason when the step's reward functions returned NaN/inf (``rewards/<name>/non_finite``)."""
    bad = {k.split("/")[1]: int(v) for k, v in metrics.items() if k.startswith("rewards/") and k.endswith("/non_finite") and v}
    if not bad:
        return None
    return "non-finite rewards from " + ", ".join(f"{name!r} ({count} values)" for name, count in sorted(bad.items()))


class StepGuard:
    def __init__(self, on_fault: str = "stop", loss_spike_zscore: float | None = None):
        self.on_fault = on_fault
        self.loss_spike_zscore = loss_spike_zscore
        self.history: list[float] = []  # losses of recent good steps
        self.skipped = 0
        self.consecutive = 0

    def spike(self, loss: float) -> str | None:
        """A reason when ``loss`` is a spike against the recent good steps."""
        if self.loss_spike_zscore is None or len(self.history) < SPIKE_MIN_HISTORY:
            return None
        mean = sum(self.history) / len(self.history)
        std = math.sqrt(sum((x - mean) ** 2 for x in self.history) / len(self.history))
        if loss <= mean + self.loss_spike_zscore * max(std, 1e-8):
            return None
        return (f"loss spike: {loss:.4g} is {(loss - mean) / max(std, 1e-8):.1f} standard deviations above the mean "
                f"of the last {len(self.history)} steps ({mean:.4g})")

    def fault(self, step: int, reason: str, last_checkpoint: str) -> None:
        """Stop (raise) or count the faulty ``step`` as skipped."""
        error = LossSpikeError if reason.startswith("loss spike") else NonFiniteLossError
        if self.on_fault == "stop":
            raise error(f"step {step}: {reason}; stopped before the optimizer step, weights untouched "
                        f"(last good checkpoint: {last_checkpoint}; on_fault=skip skips such steps)")
        self.skipped += 1
        self.consecutive += 1
        log.warning("step %d: %s; step skipped (%d skipped so far)", step, reason, self.skipped)
        if self.consecutive >= MAX_CONSECUTIVE_SKIPS:
            raise error(f"step {step}: {reason}; {self.consecutive} steps in a row skipped, stopping "
                        f"(weights untouched; last good checkpoint: {last_checkpoint})")

    def good(self, loss: float) -> None:
        self.consecutive = 0
        self.history = (self.history + [loss])[-SPIKE_WINDOW:]

    def state_dict(self) -> dict:
        return {"history": self.history, "skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.skipped, self.consecutive = list(state["history"]), state["skipped"], state["consecutive"]
