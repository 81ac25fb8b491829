"""Tokenisation: prompt masks through the chat template, plain concatenation, truncation counts."""

import logging
from pathlib import Path

import pytest

from alignkit.data import (
    BinaryFeedback,
    EncodedBinary,
    EncodedPair,
    EncodedPrompt,
    EncodedSFT,
    PreferencePair,
    PromptOnly,
    Ranking,
    SFTExample,
    encode_completion,
    encode_dataset,
    encode_prompt,
    read_records,
    response_mask,
)

FIXTURES = Path(__file__).parent / "fixtures"
USER = [{"role": "user", "content": "What color is the sky?"}]
BLUE = [{"role": "assistant", "content": "Blue."}]


def test_masked_tokens_are_the_templated_prompt_and_unmasked_the_reply(tokenizer):
    prompt_ids = encode_prompt(tokenizer, USER)
    completion_ids = encode_completion(tokenizer, USER, BLUE)
    input_ids, mask = response_mask(prompt_ids, completion_ids)
    assert len(input_ids) == len(mask) and set(mask) == {0, 1} and mask == sorted(mask)
    prompt_part = [t for t, m in zip(input_ids, mask) if m == 0]
    reply_part = [t for t, m in zip(input_ids, mask) if m == 1]
    assert tokenizer.decode(prompt_part) == tokenizer.apply_chat_template(USER, add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(reply_part) == "Blue.<|im_end|>\n"
    assert tokenizer.decode(input_ids) == tokenizer.apply_chat_template(USER + BLUE, tokenize=False)


def test_multi_turn_sft_trains_on_the_last_reply_only(tokenizer):
    record = read_records(FIXTURES / "sft_messages.jsonl", "sft").records[2]
    (item,) = encode_dataset(tokenizer, [record], max_length=256).items
    assert isinstance(item, EncodedSFT)
    assert tokenizer.decode(item.completion_ids) == "Twelve.<|im_end|>\n"
    assert tokenizer.decode(item.prompt_ids).endswith("<|im_start|>user\nAnother one.<|im_end|>\n<|im_start|>assistant\n")


def test_standard_strings_are_concatenated_with_eos_and_no_template(tokenizer):
    prompt, completion = "Question: What is 2 + 2?\nAnswer:", " 4"
    prompt_ids = encode_prompt(tokenizer, prompt)
    completion_ids = encode_completion(tokenizer, prompt, completion)
    assert tokenizer.decode(prompt_ids) == prompt
    assert tokenizer.decode(completion_ids) == " 4<|im_end|>"
    assert completion_ids[-1] == tokenizer.eos_token_id


def test_tokens_merging_across_the_boundary_keep_the_prompt_intact(tokenizer):
    # "Hel" + "lo" tokenises as one "Hello" token: the full text's ids do not start with the prompt's.
    prompt_ids = encode_prompt(tokenizer, "Hel")
    full_ids = tokenizer("Hello there" + tokenizer.eos_token)["input_ids"]
    assert full_ids[: len(prompt_ids)] != prompt_ids
    completion_ids = encode_completion(tokenizer, "Hel", "lo there")
    assert prompt_ids == tokenizer("Hel")["input_ids"]
    assert tokenizer.decode(prompt_ids + completion_ids) == "Hello there<|im_end|>"


def test_pair_encoding_matches_trl_dpo_tokenisation(tokenizer):
    """TRL 1.16 DPOTrainer.tokenize_fn, reproduced: ids of prompt, of prompt+chosen, split after the prompt."""
    for record in read_records(FIXTURES / "pairs_conversational.jsonl", "preference").records:
        (item,) = encode_dataset(tokenizer, [record], max_length=1024).items
        trl_prompt = tokenizer.apply_chat_template(record.prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        trl_full = tokenizer.apply_chat_template(record.prompt + record.chosen, tokenize=True, return_dict=True)["input_ids"]
        assert item.prompt_ids == trl_prompt and item.chosen_ids == trl_full[len(trl_prompt):]
    for record in read_records(FIXTURES / "pairs_standard.jsonl", "preference").records:
        (item,) = encode_dataset(tokenizer, [record], max_length=1024).items
        trl_full = tokenizer(text=record.prompt + record.rejected + tokenizer.eos_token)["input_ids"]
        assert item.prompt_ids + item.rejected_ids == trl_full


def test_encode_dataset_builds_each_kind(tokenizer):
    records = [
        PreferencePair(USER, BLUE, [{"role": "assistant", "content": "Green."}], meta={"id": 1}),
        SFTExample(USER, BLUE),
        BinaryFeedback(USER, BLUE, False),
        PromptOnly(USER, "blue"),
        Ranking(USER, [BLUE, [{"role": "assistant", "content": "Red."}], [{"role": "assistant", "content": "Grey."}]], [3, 1, 1]),
    ]
    result = encode_dataset(tokenizer, records, max_length=256)
    kinds = [type(item) for item in result.items]
    # The ranking became its 2 untied pairs (the tie between Red and Grey is skipped and said so).
    assert kinds == [EncodedPair, EncodedSFT, EncodedBinary, EncodedPrompt, EncodedPair, EncodedPair]
    assert result.items[0].meta == {"id": 1} and result.items[2].label is False
    assert result.items[3].prompt_ids == encode_prompt(tokenizer, USER)
    assert (result.items[3].answer, result.items[3].prompt) == ("blue", USER)
    assert result.n_truncated == 0 and result.n_dropped == 0
    assert result.warnings == ["<records>: expanded 1 rankings into 2 pairs (1 tied pairs skipped)"]


def test_truncation_keeps_the_end_of_the_prompt_and_counts_rows(tokenizer, caplog):
    long_user = [{"role": "user", "content": " ".join(f"w{i}" for i in range(100))}]
    long_reply = [{"role": "assistant", "content": " ".join(f"r{i}" for i in range(100))}]
    records = [
        PreferencePair(long_user, BLUE, [{"role": "assistant", "content": "Green."}]),  # prompt cut
        SFTExample(USER, long_reply),  # response cut
        SFTExample(USER, BLUE),  # fits
    ]
    full_prompt = encode_prompt(tokenizer, long_user)
    full_reply = encode_completion(tokenizer, USER, long_reply)
    with caplog.at_level(logging.WARNING):
        result = encode_dataset(tokenizer, records, max_length=64, max_prompt_length=40, source_name="mixed")
    cut_pair, cut_sft, whole = result.items
    assert cut_pair.prompt_ids == full_prompt[-40:]
    assert tokenizer.decode(cut_pair.prompt_ids).endswith("w99<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.decode(cut_pair.chosen_ids) == "Blue.<|im_end|>\n"
    assert cut_sft.completion_ids == full_reply[: 64 - len(cut_sft.prompt_ids)]
    assert len(cut_sft.prompt_ids) + len(cut_sft.completion_ids) == 64
    assert whole.completion_ids == encode_completion(tokenizer, USER, BLUE)
    assert (result.n_truncated, result.n_dropped) == (2, 0)
    assert result.warnings[0].startswith("mixed: truncated 2 of 3 rows to max_length=64")
    assert "truncated 2 of 3 rows to max_length=64" in caplog.text


def test_max_completion_length_keeps_each_response_opening_without_end_of_turn(tokenizer):
    """The first N tokens of each response and nothing after: no end-of-turn, so a model trained on
    the cut learns how answers open, not to stop after N tokens."""
    sure = [{"role": "assistant", "content": "Sure! The sky looks blue because air scatters blue light most."}]
    no = [{"role": "assistant", "content": "I can't say."}]
    pair = PreferencePair(USER, sure, no)
    (whole,) = encode_dataset(tokenizer, [pair], max_length=256).items
    (cut,) = encode_dataset(tokenizer, [pair], max_length=256, max_completion_length=3).items
    assert cut.prompt_ids == whole.prompt_ids
    assert (cut.chosen_ids, cut.rejected_ids) == (whole.chosen_ids[:3], whole.rejected_ids[:3])
    assert "<|im_end|>" in tokenizer.decode(whole.rejected_ids) and "<|im_end|>" not in tokenizer.decode(cut.rejected_ids)
    # with less room under max_length than max_completion_length, max_length decides
    n = len(whole.prompt_ids)
    (tight,) = encode_dataset(tokenizer, [pair], max_length=n + 2, max_prompt_length=n, max_completion_length=3).items
    assert tight.chosen_ids == whole.chosen_ids[:2]


def test_max_completion_length_reaches_training_data_from_the_run_config(tokenizer):
    from alignkit.train.sft import SFTConfig
    from alignkit.train.setup import load_encoded

    cfg = SFTConfig(data="hhh:test", max_completion_length=2, max_length=112, max_prompt_length=80)
    items = load_encoded("hhh:test", "sft", tokenizer, cfg)
    assert len(items) == 148 and {len(it.completion_ids) for it in items} == {2}
    assert {tokenizer.decode(it.completion_ids[:1]) for it in items} >= {"I"}  # the refusals' opening
    # an online method samples its completions: the field would do nothing there, so it is refused
    from alignkit.train.grpo import GRPOConfig

    with pytest.raises(ValueError, match="max_new_tokens"):
        GRPOConfig(prompts="arith", reward=["math"], max_completion_length=8)
    from alignkit.train.prm import PRMConfig

    with pytest.raises(ValueError, match="labelled steps"):  # nor would a process reward model use it
        PRMConfig(max_completion_length=8)


def test_default_prompt_budget_is_half_of_max_length(tokenizer):
    long_user = [{"role": "user", "content": "word " * 100}]
    (item,) = encode_dataset(tokenizer, [PromptOnly(long_user)], max_length=50).items
    assert item.prompt_ids == encode_prompt(tokenizer, long_user)[-25:]


def test_prompt_budget_larger_than_max_length_is_refused(tokenizer):
    with pytest.raises(ValueError, match="exceeds max_length"):
        encode_dataset(tokenizer, [], max_length=10, max_prompt_length=20)
