"""The reward-function protocol and its weighted combination (no model)."""

import functools
import math

import pytest
import torch

from alignkit.rewards import RewardSet, call_reward, completion_text, length_penalty, reward_name

PROMPTS = ["p0", "p1", "p2"]
COMPLETIONS = ["a", "bb", "ccc"]


def by_length(prompts, completions, completion_ids=None, **columns):
    return [float(len(completion_text(c))) for c in completions]


def only_second(prompts, completions, completion_ids=None, **columns):
    return [None, 10.0, None]


def test_completion_text_handles_both_formats():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "hi"}]) == "hi"
    assert completion_text({"role": "assistant", "content": "hi"}) == "hi"
    multimodal = [{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]}]
    assert completion_text(multimodal) == "ab"
    two_turns = [{"role": "assistant", "content": "x"}, {"role": "tool", "content": "y"}]
    assert completion_text(two_turns) == "x\ny"


def test_call_reward_rejects_wrong_lengths_and_types_instead_of_broadcasting():
    assert call_reward(by_length, PROMPTS, COMPLETIONS) == [1.0, 2.0, 3.0]
    assert call_reward(lambda **kw: torch.tensor([1.0, 2.0, 3.0]), PROMPTS, COMPLETIONS) == [1.0, 2.0, 3.0]
    class Short:
        name = "short"

        def __call__(self, **kw):
            return [1.0, 2.0]

    with pytest.raises(ValueError, match="'short' returned 2 values for 3 completions"):
        call_reward(Short(), PROMPTS, COMPLETIONS)
    with pytest.raises(TypeError, match="not a list"):
        call_reward(lambda **kw: 1.0, PROMPTS, COMPLETIONS)
    with pytest.raises(TypeError, match="row 1"):
        call_reward(lambda **kw: [1.0, "2", 3.0], PROMPTS, COMPLETIONS)


def test_reward_names():
    assert reward_name(by_length) == "by_length"
    assert reward_name(functools.partial(length_penalty, max_words=3)) == "length_penalty"
    assert reward_name(type("Scorer", (), {"__call__": lambda self: None})()) == "Scorer"


def test_reward_set_weights_skips_none_and_keeps_each_functions_values():
    rewards = RewardSet([by_length, only_second], weights=[0.5, 2.0])
    result = rewards(PROMPTS, COMPLETIONS)
    assert result.total == [0.5, 1.0 + 20.0, 1.5]  # None rows take nothing from only_second
    assert result.per_function == {"by_length": [1.0, 2.0, 3.0], "only_second": [None, 10.0, None]}
    assert result.not_applicable == {"by_length": 0, "only_second": 2} and result.unscored_rows == 0
    metrics = result.metrics()
    assert metrics["reward"] == pytest.approx(23.0 / 3)
    assert metrics["rewards/by_length/mean"] == 2.0 and metrics["rewards/by_length/std"] == pytest.approx(math.sqrt(2 / 3))
    assert metrics["rewards/only_second/mean"] == 10.0 and metrics["rewards/only_second/not_applicable"] == 2.0


def test_rows_no_function_applies_to_get_zero_and_are_counted():
    result = RewardSet({"second": only_second})(PROMPTS, COMPLETIONS)
    assert result.total == [0.0, 10.0, 0.0] and result.unscored_rows == 2
    assert result.metrics()["rewards/unscored_rows"] == 2.0


def test_every_column_reaches_every_function():
    seen = []

    def spy(prompts, completions, completion_ids=None, **columns):
        seen.append((completion_ids, columns))
        return [0.0] * len(completions)

    RewardSet({"a": spy, "b": spy})(PROMPTS, COMPLETIONS, [[1], [2, 3], [4]], answer=["1", "2", "3"], level=[1, 2, 3])
    assert seen == [([[1], [2, 3], [4]], {"answer": ["1", "2", "3"], "level": [1, 2, 3]})] * 2


def test_non_finite_rewards_are_counted_not_used():
    def broken(prompts, completions, completion_ids=None, **columns):
        return [1.0, math.nan, math.inf]

    result = RewardSet([by_length, broken])(PROMPTS, COMPLETIONS)
    assert result.total == [2.0, 2.0, 3.0]  # broken's NaN and inf are left out
    assert result.non_finite == {"broken": 2}
    assert result.metrics()["rewards/broken/non_finite"] == 2.0 and result.metrics()["rewards/broken/mean"] == 1.0
    with pytest.raises(ValueError, match="non-finite values at rows \\[1, 2\\]"):
        RewardSet([broken], on_non_finite="raise")(PROMPTS, COMPLETIONS)


def test_reward_set_errors_are_clear():
    with pytest.raises(ValueError, match="both named"):
        RewardSet([by_length, by_length])
    with pytest.raises(ValueError, match="1 weights for 2"):
        RewardSet([by_length, only_second], weights=[1.0])
    with pytest.raises(ValueError, match="returned 2 values for 3"):
        RewardSet([lambda **kw: [1.0, 2.0]])(PROMPTS, COMPLETIONS)
    with pytest.raises(ValueError, match="2 prompts, 3 completions"):
        RewardSet([by_length])(PROMPTS[:2], COMPLETIONS)
    assert RewardSet({"x": by_length}, weights={"x": -1.0})(PROMPTS, COMPLETIONS).total == [-1.0, -2.0, -3.0]
