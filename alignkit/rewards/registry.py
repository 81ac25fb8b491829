"""Reward functions by name, for ``--reward NAME`` options and recipes.

Each entry follows the protocol of ``alignkit.rewards.protocol``; bind options with
``functools.partial``. A reward model is not here: it needs a path, so it is built with
``RewardModelReward.from_pretrained(path)``.
"""

from __future__ import annotations

from typing import Callable

from alignkit.rewards.code_tests import code_tests
from alignkit.rewards.constraints import instruction_constraints
from alignkit.rewards.format import format_check
from alignkit.rewards.length import length_penalty
from alignkit.rewards.math_answer import math_answer
from alignkit.rewards.sentiment import vader_sentiment

REWARD_FUNCTIONS: dict[str, Callable] = {
    "code": code_tests,  # fraction of the row's `tests` passed, in the sandbox
    "constraints": instruction_constraints,  # fraction of the row's `constraints` met
    "format": format_check,  # 1 unless empty or looping (optionally: a required layout)
    "length": length_penalty,  # −excess / budget beyond 200 words
    "math": math_answer,  # 1 if the final answer equals the row's `answer` / `solution`
    "vader": vader_sentiment,  # VADER compound sentiment in [−1, 1]
}


def get_reward_function(name: str) -> Callable:
    """The function registered under ``name``, with the known names in the error."""
    try:
        return REWARD_FUNCTIONS[name]
    except KeyError:
        raise KeyError(f"unknown reward {name!r}; known: {', '.join(sorted(REWARD_FUNCTIONS))}") from None
