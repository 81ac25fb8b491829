"""Reward functions, the refusal heuristic and the reward-function judge (no model)."""

import functools

import pytest

from alignkit.judges import PairwiseJudge, RewardFunctionJudge, ScoringJudge, preference_from_scores
from alignkit.rewards import format_check, format_problems, length_penalty, refusal_detector

PROMPT = [{"role": "user", "content": "hi"}]


def test_length_penalty_is_zero_within_budget_then_linear():
    assert length_penalty(PROMPT, "one two three", max_words=5) == 0.0
    assert length_penalty(PROMPT, " ".join(["w"] * 10), max_words=5) == -1.0  # twice the budget
    assert length_penalty(PROMPT, " ".join(["w"] * 8), max_words=4, weight=2.0) == -2.0


def test_format_check_flags_empty_and_looping_text():
    assert format_check(PROMPT, "  \n ") == 0.0 and format_problems("") == ["empty"]
    assert format_problems("a\nb\n a \nb") == ["repeated line: a", "repeated line: b"]
    assert format_check(PROMPT, "first\n\nsecond\n\nthird") == 1.0  # blank lines may repeat


@pytest.mark.parametrize(
    "text",
    ["I can't help with that.", "I cannot do this.", "I’m sorry, but I won’t.", "I won't write that.",
     "I am unable to assist.", "I must decline.", "Sorry — i will not share it."],
)
def test_refusal_detector_flags_refusals(text):
    assert refusal_detector(text)


@pytest.mark.parametrize(
    "text",
    ["Sure! Here is a poem.", "I can't wait to help!", "I can't help but notice the pattern.",
     "I am sorry for your loss.", "Scanning cannot fail here.", ""],
)
def test_refusal_detector_leaves_compliant_text(text):
    assert not refusal_detector(text)


def test_reward_function_judge_compares_rewards():
    judge = RewardFunctionJudge(lambda prompt, response: len(response))
    assert isinstance(judge, PairwiseJudge) and isinstance(judge, ScoringJudge)
    prompts = [PROMPT] * 3
    assert judge.judge(prompts, ["long answer", "a", "same"], ["short", "bb", "same"]) == [1.0, 0.0, 0.5]
    assert judge.score(prompts, ["a", "bb", ""]) == [1.0, 2.0, 0.0]
    lenient = RewardFunctionJudge(lambda p, r: len(r), tie_tolerance=2)
    assert lenient.judge([PROMPT], ["abc"], ["a"]) == [0.5]
    with pytest.raises(ValueError):
        judge.judge(prompts, ["a"], ["b"])


def test_reward_functions_plug_into_the_judge():
    judge = RewardFunctionJudge(functools.partial(length_penalty, max_words=2))
    assert judge.judge([PROMPT, PROMPT], ["short", "a b c d"], ["a b c d", "x y z w"]) == [1.0, 0.5]
    assert RewardFunctionJudge(format_check).judge([PROMPT], ["x\nx"], ["x"]) == [0.0]


def test_preference_from_scores_is_bradley_terry():
    import math

    assert preference_from_scores([2.0, 0.0, -800.0], [1.0, 0.0, 0.0]) == pytest.approx([1 / (1 + math.exp(-1)), 0.5, 0.0])
