"""Batched generation on a tiny random model."""

import pytest
import torch

from alignkit.rollout import encode_prompt, generate

PROMPTS = [
    [{"role": "user", "content": text}]
    for text in ["hi", "Tell me a long story about dragons, knights and a very old castle.", "2+2?", "why?", "Name three colours."]
]


def untied_tiny_lm(tokenizer, seed=0):
    """A tiny random Llama with untied embeddings. The tied tiny model greedily repeats the last
    prompt token for every prompt, which would hide batching bugs; untied, outputs differ."""
    from transformers import AutoModelForCausalLM

    from alignkit.models.tiny import tiny_config

    config = tiny_config(tokenizer)
    config.tie_word_embeddings = False
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


@pytest.fixture(scope="module")
def lm(tokenizer):
    return untied_tiny_lm(tokenizer)


def test_generate_returns_one_generation_per_prompt_in_order(lm, tokenizer):
    generations = generate(lm, tokenizer, PROMPTS, max_new_tokens=6, batch_size=2, progress=False)
    assert len(generations) == len(PROMPTS)
    for prompt, g in zip(PROMPTS, generations):
        assert g.prompt is prompt
        assert g.prompt_ids == encode_prompt(tokenizer, prompt)
        assert 1 <= len(g.completion_ids) <= 6
        assert tokenizer.pad_token_id not in g.completion_ids[:-1]  # pads stripped, EOS only last
        assert g.text == tokenizer.decode(g.completion_ids, skip_special_tokens=True).strip()
    assert len({tuple(g.completion_ids) for g in generations}) > 1  # the model does not say one thing


def test_left_padded_batch_matches_one_prompt_at_a_time(lm, tokenizer):
    batched = generate(lm, tokenizer, PROMPTS, max_new_tokens=8, batch_size=len(PROMPTS), progress=False)
    single = [generate(lm, tokenizer, [p], max_new_tokens=8, progress=False)[0] for p in PROMPTS]
    assert [g.completion_ids for g in batched] == [g.completion_ids for g in single]
    assert tokenizer.padding_side == "right"  # restored after the left-padded batch


def test_generation_stops_at_eos(lm, tokenizer):
    lm = untied_tiny_lm(tokenizer, seed=1)
    first = [g.completion_ids[0] for g in generate(lm, tokenizer, PROMPTS[:2], max_new_tokens=8, progress=False)]
    lm.generation_config.eos_token_id = [tokenizer.eos_token_id, first[0]]  # the first answer's first token now ends it
    generations = generate(lm, tokenizer, PROMPTS[:2], max_new_tokens=8, progress=False)
    assert generations[0].completion_ids == [first[0]]
    assert len(generations[1].completion_ids) == 8 or generations[1].completion_ids[-1] in (tokenizer.eos_token_id, first[0])
    assert generations[0].text == tokenizer.decode([first[0]], skip_special_tokens=True).strip()


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(lm, tokenizer):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = generate(lm, tokenizer, PROMPTS, max_new_tokens=6, do_sample=True, seed=7, progress=False)
    assert torch.equal(torch.rand(1), expected_next)
    again = generate(lm, tokenizer, PROMPTS, max_new_tokens=6, do_sample=True, seed=7, progress=False)
    other = generate(lm, tokenizer, PROMPTS, max_new_tokens=6, do_sample=True, seed=8, progress=False)
    assert [g.completion_ids for g in first] == [g.completion_ids for g in again]
    assert [g.completion_ids for g in first] != [g.completion_ids for g in other]


def test_generate_through_a_peft_wrapper(tokenizer):
    from peft import LoraConfig, get_peft_model

    plain = generate(untied_tiny_lm(tokenizer), tokenizer, PROMPTS[:3], max_new_tokens=5, progress=False)
    wrapped = get_peft_model(untied_tiny_lm(tokenizer), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    via_peft = generate(wrapped, tokenizer, PROMPTS[:3], max_new_tokens=5, progress=False)
    # A fresh LoRA adapter is the identity (B = 0), so greedy outputs must not change.
    assert [g.completion_ids for g in via_peft] == [g.completion_ids for g in plain]
