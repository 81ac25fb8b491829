"""A reward model as a reward function, with its own tokenizer and chat template; ensembles."""

import copy
import math

import pytest
import torch

from alignkit.rewards import RewardEnsemble, RewardModelReward, RewardSet

# The reward model's own template: nothing like the policy's ChatML (<|im_start|>role ...).
RM_TEMPLATE = "{% for m in messages %}### {{ m['role'] | upper }}: {{ m['content'] }}\n{% endfor %}"

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Say hi"}],
    [{"role": "user", "content": "Name a colour."}],
]
COMPLETIONS = ["Paris is the capital of France, and it has been for a long time.", "Hi!", "Blue."]


def tiny_reward_model(tokenizer, seed):
    from transformers import AutoModelForSequenceClassification

    from alignkit.models.tiny import tiny_config

    config = tiny_config(tokenizer)
    config.num_labels = 1
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)  # a default (tiny) head scores everything ~0
    return model


@pytest.fixture(scope="module")
def rm_tokenizer(tokenizer):
    rm_tokenizer = copy.deepcopy(tokenizer)
    rm_tokenizer.chat_template = RM_TEMPLATE
    return rm_tokenizer


@pytest.fixture(scope="module")
def reward_models(tokenizer):
    return [tiny_reward_model(tokenizer, seed) for seed in (0, 1)]


def score_one(model, ids):
    from alignkit.models.heads import sequence_scores

    ids = torch.tensor([ids])
    return sequence_scores(model, ids, torch.ones_like(ids)).item()


def test_completions_are_re_encoded_with_the_reward_models_template(tokenizer, rm_tokenizer, reward_models):
    model = reward_models[0]
    reward = RewardModelReward(model, rm_tokenizer, batch_size=2)
    conversations = [p + [{"role": "assistant", "content": c}] for p, c in zip(PROMPTS, COMPLETIONS)]
    rm_ids = [rm_tokenizer.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"] for m in conversations]
    assert rm_tokenizer.decode(rm_ids[1]) == "### USER: Say hi\n### ASSISTANT: Hi!\n"
    expected = [score_one(model, ids) for ids in rm_ids]  # one unpadded row each, by hand
    # Garbage policy token ids: the reward model must not read them.
    values = reward(PROMPTS, [[{"role": "assistant", "content": c}] for c in COMPLETIONS], completion_ids=[[7]] * 3)
    assert values == pytest.approx(expected, abs=1e-5)  # batches of 2 with right padding change nothing
    assert reward(["What is the capital of France?", "Say hi", "Name a colour."], COMPLETIONS) == pytest.approx(expected, abs=1e-5)
    # The policy's own template gives other token ids, hence other rewards: the template matters.
    policy_ids = [tokenizer.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"] for m in conversations]
    assert all(abs(score_one(model, p) - e) > 1e-4 for p, e in zip(policy_ids, expected))
    assert RewardModelReward(model, tokenizer)(PROMPTS, COMPLETIONS) == pytest.approx([score_one(model, p) for p in policy_ids], abs=1e-5)


def test_chat_template_override_and_name_in_a_reward_set(tokenizer, rm_tokenizer, reward_models):
    overridden = RewardModelReward(reward_models[0], tokenizer, chat_template=RM_TEMPLATE, name="rm")
    own = RewardModelReward(reward_models[0], rm_tokenizer)
    assert overridden(PROMPTS, COMPLETIONS) == pytest.approx(own(PROMPTS, COMPLETIONS), abs=1e-6)
    result = RewardSet([overridden])(PROMPTS, COMPLETIONS)
    assert list(result.per_function) == ["rm"] and result.total == pytest.approx(own(PROMPTS, COMPLETIONS), abs=1e-6)


def test_ensemble_reductions_by_hand():
    members = [lambda **kw: [1.0, 0.0, None], lambda **kw: [3.0, 0.0, None], lambda **kw: [2.0, 0.0, 5.0]]
    prompts, completions = ["p"] * 3, ["a", "b", "c"]
    assert RewardEnsemble(members)(prompts, completions) == [2.0, 0.0, 5.0]
    assert RewardEnsemble(members, reduce="min")(prompts, completions) == [1.0, 0.0, 5.0]
    std = math.sqrt(((1 - 2) ** 2 + (3 - 2) ** 2 + 0) / 3)  # population std of 1, 3, 2
    assert RewardEnsemble(members, reduce="mean_minus_std", k=2.0)(prompts, completions) == pytest.approx([2.0 - 2 * std, 0.0, 5.0])
    assert RewardEnsemble([lambda **kw: [None]])(["p"], ["a"]) == [None]
    with pytest.raises(ValueError, match="reduce must be one of"):
        RewardEnsemble(members, reduce="median")


def test_ensemble_of_reward_models(rm_tokenizer, reward_models):
    singles = [RewardModelReward(m, rm_tokenizer)(PROMPTS, COMPLETIONS) for m in reward_models]
    assert max(abs(a - b) for a, b in zip(*singles)) > 1e-3  # two different models
    ensemble = RewardEnsemble([RewardModelReward(m, rm_tokenizer) for m in reward_models], reduce="min")
    assert ensemble(PROMPTS, COMPLETIONS) == pytest.approx([min(a, b) for a, b in zip(*singles)], abs=1e-6)


def test_cpu_bf16_scores_see_few_widths_and_equal_the_unpadded_ones(tokenizer):
    """Under CPU autocast a reward model's trunk runs at widths padded to multiples of 16 (oneDNN
    keeps a kernel per shape), and each row's score is the one of its own unpadded row."""
    from alignkit.models.heads import sequence_scores

    model = tiny_reward_model(tokenizer, 0)
    widths = []
    model.model.register_forward_pre_hook(lambda m, a, kw: widths.append(kw["input_ids"].shape[1]), with_kwargs=True)
    g = torch.Generator().manual_seed(0)
    for width in range(17, 34):
        ids = torch.randint(3, 1000, (2, width), generator=g)
        attention = torch.ones_like(ids)
        attention[1, width - 4 :] = 0
        with torch.autocast("cpu", dtype=torch.bfloat16):
            batched = sequence_scores(model, ids, attention)
            alone = torch.cat([sequence_scores(model, ids[:1], attention[:1]),
                               sequence_scores(model, ids[1:, : width - 4], attention[1:, : width - 4])])
        assert torch.allclose(batched, alone, atol=0.05 * alone.abs().max().item()), width
    assert set(widths) == {16, 32, 48}  # 13 to 33 tokens
