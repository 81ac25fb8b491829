"""Reward functions ``fn(prompts, completions, completion_ids, **columns) -> list[float | None]``
(TRL's protocol), their combination, and the sandbox that runs generated code."""

from alignkit.rewards.format import format_check, format_problems
from alignkit.rewards.length import length_penalty
from alignkit.rewards.refusal import REFUSAL_PATTERNS, refusal_detector
from alignkit.rewards.sandbox import SandboxResult, SandboxUnavailableError, run_in_sandbox
