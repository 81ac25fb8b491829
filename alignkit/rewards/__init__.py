"""Reward functions ``fn(prompts, completions, completion_ids, **columns) -> list[float | None]``
(TRL's protocol, see ``protocol``), their weighted combination (``RewardSet``), the name table
``REWARD_FUNCTIONS``, and the sandbox that runs generated code (``run_in_sandbox``). The refusal
heuristic (``refusal_detector``) is a classifier of text, not a reward function."""

from alignkit.rewards.code_tests import code_tests, extract_code, run_tests
from alignkit.rewards.combine import RewardResult, RewardSet
from alignkit.rewards.constraints import constraint_failures, instruction_constraints
from alignkit.rewards.ensemble import RewardEnsemble
from alignkit.rewards.format import format_check, format_problems
from alignkit.rewards.length import length_penalty
from alignkit.rewards.math_answer import math_answer
from alignkit.rewards.protocol import RewardFunction, call_reward, completion_text, reward_name
from alignkit.rewards.refusal import REFUSAL_PATTERNS, refusal_detector
from alignkit.rewards.registry import REWARD_FUNCTIONS, get_reward_function
from alignkit.rewards.reward_model import RewardModelReward, encode_conversation, score_sequences
from alignkit.rewards.sandbox import SandboxResult, SandboxUnavailableError, run_in_sandbox
from alignkit.rewards.sentiment import vader_sentiment

__all__ = [
    "REFUSAL_PATTERNS",
    "REWARD_FUNCTIONS",
    "RewardEnsemble",
    "RewardFunction",
    "RewardModelReward",
    "RewardResult",
    "RewardSet",
    "SandboxResult",
    "SandboxUnavailableError",
    "call_reward",
    "code_tests",
    "completion_text",
    "constraint_failures",
    "encode_conversation",
    "extract_code",
    "format_check",
    "format_problems",
    "get_reward_function",
    "instruction_constraints",
    "length_penalty",
    "math_answer",
    "refusal_detector",
    "reward_name",
    "run_in_sandbox",
    "run_tests",
    "score_sequences",
    "vader_sentiment",
]
