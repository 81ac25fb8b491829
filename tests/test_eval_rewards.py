"""Reward functions, the refusal heuristic and the reward-function judge (no model)."""

import functools

import pytest

from alignkit.judges import PairwiseJudge, RewardFunctionJudge, ScoringJudge, pointwise, preference_from_scores
from alignkit.rewards import completion_text, format_check, format_problems, length_penalty, refusal_detector

PROMPT = [{"role": "user", "content": "hi"}]


def test_length_penalty_is_zero_within_budget_then_linear():
    prompts = [PROMPT] * 3
    texts = ["one two three", " ".join(["w"] * 10), " ".join(["w"] * 8)]
    assert length_penalty(prompts, texts, max_words=5) == [0.0, -1.0, -0.6]  # -1 at twice the budget
    assert length_penalty(prompts[:1], [" ".join(["w"] * 8)], max_words=4, weight=2.0) == [-2.0]
    assert length_penalty(prompts[:2], ["a", "b"], [[1] * 6, [1] * 3], max_words=3, unit="tokens") == [-1.0, 0.0]
    conversational = [[{"role": "assistant", "content": " ".join(["w"] * 10)}]]
    assert length_penalty([PROMPT], conversational, max_words=5) == [-1.0]


def test_format_check_flags_empty_and_looping_text():
    assert format_check([PROMPT] * 3, ["  \n ", "a\nb\n a ", "first\n\nsecond\n\nthird"]) == [0.0, 0.0, 1.0]
    assert format_problems("") == ["empty"]
    assert format_problems("a\nb\n a \nb") == ["repeated line: a", "repeated line: b"]
    layout = functools.partial(format_check, pattern=r"<think>.*?</think>\s*<answer>.*?</answer>")
    texts = ["<think>2+2</think>\n<answer>4</answer>", "<answer>4</answer>", "<think>x</think><answer>4</answer> extra"]
    assert layout([PROMPT] * 3, texts) == [1.0, 0.0, 0.0]


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


def lengths(prompts, completions, completion_ids=None, **columns):
    return [len(completion_text(c)) for c in completions]


def test_reward_function_judge_compares_rewards():
    judge = RewardFunctionJudge(lengths)
    assert isinstance(judge, PairwiseJudge) and isinstance(judge, ScoringJudge)
    prompts = [PROMPT] * 3
    assert judge.judge(prompts, ["long answer", "a", "same"], ["short", "bb", "same"]) == [1.0, 0.0, 0.5]
    assert judge.score(prompts, ["a", "bb", ""]) == [1.0, 2.0, 0.0]
    lenient = RewardFunctionJudge(lengths, tie_tolerance=2)
    assert lenient.judge([PROMPT], ["abc"], ["a"]) == [0.5]
    with pytest.raises(ValueError):
        judge.judge(prompts, ["a"], ["b"])


def test_reward_function_judge_calls_the_protocol_like_a_trainer():
    seen = {}

    def spy(prompts, completions, completion_ids=None, **columns):
        seen.update(prompts=prompts, completions=completions, completion_ids=completion_ids, columns=columns)
        return [None if c == "skip" else 1.0 for c in map(completion_text, completions)]

    judge = RewardFunctionJudge(spy, answer=["4", "5"])
    assert judge.judge([PROMPT, "plain"], ["x", "skip"], ["skip", "y"]) == [0.5, 0.5]  # None: no comparison
    assert judge.score([PROMPT, "plain"], ["x", "y"]) == [1.0, 1.0]
    assert seen["completions"] == [[{"role": "assistant", "content": "x"}], "y"]  # the prompt's format
    assert seen["completion_ids"] is None and seen["columns"] == {"answer": ["4", "5"]}
    short = RewardFunctionJudge(lambda prompts, completions, **kw: [1.0])
    with pytest.raises(ValueError, match="returned 1 values for 2 completions"):
        short.score([PROMPT, PROMPT], ["a", "b"])


def test_pointwise_wraps_a_per_row_function():
    judge = RewardFunctionJudge(pointwise(lambda prompt, response: len(response)))
    assert judge.score([PROMPT, "plain"], ["abc", "de"]) == [3.0, 2.0]


def test_reward_functions_plug_into_the_judge():
    judge = RewardFunctionJudge(functools.partial(length_penalty, max_words=2))
    assert judge.judge([PROMPT, PROMPT], ["short", "a b c d"], ["a b c d", "x y z w"]) == [1.0, 0.5]
    assert RewardFunctionJudge(format_check).judge([PROMPT], ["x\nx"], ["x"]) == [0.0]


def test_preference_from_scores_is_bradley_terry():
    import math

    assert preference_from_scores([2.0, 0.0, -800.0], [1.0, 0.0, 0.0]) == pytest.approx([1 / (1 + math.exp(-1)), 0.5, 0.0])
