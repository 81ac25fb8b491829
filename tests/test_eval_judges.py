"""The reward-model judge on a tiny scalar-head model."""

import math

import pytest
import torch

from alignkit.judges import PairwiseJudge, RewardModelJudge, ScoringJudge
from alignkit.judges.reward_model import encode_conversation

PROMPTS = [[{"role": "user", "content": "What is the capital of France?"}], [{"role": "user", "content": "Say hi"}]]


def tiny_reward_model(tokenizer, seed=0):
    from transformers import AutoModelForSequenceClassification

    from alignkit.models.tiny import tiny_config

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(reward_config(tokenizer))
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)  # a default (tiny) head scores everything ~0
    return model


@pytest.fixture(scope="module")
def judge(tokenizer):
    return RewardModelJudge(tiny_reward_model(tokenizer), tokenizer, batch_size=2)


def test_reward_model_judge_is_sigmoid_of_reward_difference(judge, tokenizer):
    from alignkit.models.heads import sequence_scores

    assert isinstance(judge, PairwiseJudge) and isinstance(judge, ScoringJudge)
    a = ["Paris is the capital of France.", "Hi!"]
    b = ["I think it might be Lyon, but I am not sure at all.", "Hello there, friend."]

    def reward(prompt, response):  # one unpadded row, scored by hand
        ids = torch.tensor([encode_conversation(tokenizer, prompt, response)])
        return sequence_scores(judge.model, ids, torch.ones_like(ids)).item()

    expected = [1 / (1 + math.exp(-(reward(p, x) - reward(p, y)))) for p, x, y in zip(PROMPTS, a, b)]
    p_ab = judge.judge(PROMPTS, a, b)
    assert p_ab == pytest.approx(expected, abs=1e-5)  # right padding in a batch changes nothing
    assert all(0.0 < p < 1.0 for p in p_ab) and max(abs(p - 0.5) for p in p_ab) > 1e-3
    p_ba = judge.judge(PROMPTS, b, a)
    assert [x + y for x, y in zip(p_ab, p_ba)] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert judge.judge(PROMPTS, a, a) == pytest.approx([0.5, 0.5], abs=1e-6)


def test_reward_model_scores_the_chat_formatted_conversation(tokenizer):
    ids = encode_conversation(tokenizer, PROMPTS[1], "Hi!")
    text = tokenizer.decode(ids)
    assert "<|im_start|>user\nSay hi<|im_end|>" in text
    assert text.rstrip().endswith("<|im_start|>assistant\nHi!<|im_end|>")


def reward_config(tokenizer):
    from alignkit.models.tiny import tiny_config

    config = tiny_config(tokenizer)
    config.num_labels = 1  # transformers 5 takes num_labels on the config, not as a from_config kwarg
    return config
