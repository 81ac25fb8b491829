"""The rollout engines on tiny random models: log-probs, greedy parity with generate, seeds, finish
reasons and masks, n samples, stop strings, LoRA weights, engine choice."""

import pytest
import torch

from alignkit.rollout import HFEngine, Rollouts, StaticCacheEngine, make_engine
from alignkit.rollout.sampling import sample_tokens, truncate_logits

PROMPTS = [
    [{"role": "user", "content": text}]
    for text in ["hi", "Tell me a long story about dragons, knights and a very old castle.", "2+2?", "why?", "Name three colours."]
]


def untied_tiny_lm(tokenizer, seed=0, **overrides):
    """Untied embeddings (the tied tiny model greedily repeats the prompt's last token) and a wide
    initialisation (at the default 0.02 attention is nearly uniform, so a cache holding the wrong
    keys would go unnoticed): batching and cache bugs change the outputs."""
    from transformers import AutoModelForCausalLM

    from alignkit.models.tiny import tiny_config

    config = tiny_config(tokenizer)
    config.tie_word_embeddings = False
    config.initializer_range = 0.2
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


@pytest.fixture(scope="module")
def lm(tokenizer):
    return untied_tiny_lm(tokenizer)


def teacher_forced_logps(model, rollouts: Rollouts, pad_id: int, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward log-probs, engine log-probs) at every completion token, flattened."""
    batch = rollouts.to_batch(pad_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1] / temperature
    logps = torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["response_mask"][:, 1:].bool()
    return logps[mask], batch["logprobs"][:, 1:][mask]


@pytest.mark.parametrize("temperature,packed", [(1.0, False), (0.7, False), (1.0, True)])
def test_engine_logprobs_equal_a_teacher_forced_forward(lm, tokenizer, temperature, packed):
    from alignkit.rollout.decoder import Decoder

    # 5 prompts x 3 samples through 4 slots: rows retire, slots are refilled and moved mid-run.
    engine = StaticCacheEngine(lm, tokenizer, max_batch=4, dtype=torch.float32)
    engine.decoder = Decoder(lm, dtype=torch.float32, packed=packed)  # both weight layouts, whatever this CPU prefers
    rollouts = engine.generate(PROMPTS, n=3, max_new_tokens=10, temperature=temperature, seed=3)
    forward, sampled = teacher_forced_logps(lm, rollouts, tokenizer.pad_token_id, temperature)
    assert forward.numel() == rollouts.num_tokens == 15 * 10
    torch.testing.assert_close(sampled, forward, atol=2e-5, rtol=0)


def test_greedy_equals_model_generate(lm, tokenizer):
    from alignkit.rollout.engine import encode_prompt

    engine = StaticCacheEngine(lm, tokenizer, max_batch=2, dtype=torch.float32)
    rollouts = engine.generate(PROMPTS, max_new_tokens=12, temperature=0)
    for prompt, completion in zip(PROMPTS, rollouts.completion_ids):
        ids = torch.tensor([encode_prompt(tokenizer, prompt)])
        out = lm.generate(ids, max_new_tokens=12, do_sample=False, temperature=None, top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
        assert completion == out[0, ids.shape[1] :].tolist()
    hf = HFEngine(lm, tokenizer).generate(PROMPTS, max_new_tokens=12, temperature=0)
    assert hf.completion_ids == rollouts.completion_ids
    torch.testing.assert_close(torch.tensor(hf.logprobs), torch.tensor(rollouts.logprobs), atol=2e-5, rtol=0)


def test_a_seed_reproduces_samples_and_n_samples_of_a_prompt_differ(lm, tokenizer):
    engine = StaticCacheEngine(lm, tokenizer, max_batch=6, dtype=torch.float32)
    first = engine.generate(PROMPTS[:2], n=4, max_new_tokens=8, seed=7)
    again = engine.generate(PROMPTS[:2], n=4, max_new_tokens=8, seed=7)
    other = engine.generate(PROMPTS[:2], n=4, max_new_tokens=8, seed=8)
    assert first.completion_ids == again.completion_ids and first.logprobs == again.logprobs
    assert first.completion_ids != other.completion_ids
    assert first.prompt_index == [0, 0, 0, 0, 1, 1, 1, 1]
    for group in (first.completion_ids[:4], first.completion_ids[4:]):
        assert len({tuple(c) for c in group}) == 4


def test_rows_that_stop_early_have_the_right_finish_reason_and_masks(tokenizer):
    lm = untied_tiny_lm(tokenizer, seed=1)
    greedy = StaticCacheEngine(lm, tokenizer, dtype=torch.float32).generate(PROMPTS, max_new_tokens=10, temperature=0)
    # Declare the 3rd greedy token of prompt 0 an end-of-sequence token: rows that produce it end there.
    end = greedy.completion_ids[0][2]
    lm.generation_config.eos_token_id = [tokenizer.eos_token_id, end]
    for engine in (StaticCacheEngine(lm, tokenizer, max_batch=2, dtype=torch.float32), HFEngine(lm, tokenizer)):
        rollouts = engine.generate(PROMPTS, max_new_tokens=10, temperature=0)
        batch = rollouts.to_batch(tokenizer.pad_token_id)
        for r, full in enumerate(greedy.completion_ids):
            expected = full[: full.index(end) + 1] if end in full else full
            assert rollouts.completion_ids[r] == expected
            assert rollouts.finish_reasons[r] == ("eos" if end in full else "length")
            prompt_len = len(rollouts.prompt_ids[r])
            assert batch["response_mask"][r].tolist() == [0] * prompt_len + [1] * len(expected) + [0] * (batch["input_ids"].shape[1] - prompt_len - len(expected))
            assert int(batch["attention_mask"][r].sum()) == prompt_len + len(expected)
        assert rollouts.finish_reasons[0] == "eos" and "length" in rollouts.finish_reasons


def test_stop_strings_end_a_row_and_are_cut_from_its_text(lm, tokenizer):
    engine = StaticCacheEngine(lm, tokenizer, dtype=torch.float32)
    full = engine.generate(PROMPTS[:1], max_new_tokens=12, temperature=0)
    stop = tokenizer.decode(full.completion_ids[0][4:6])  # a string the greedy answer will write
    assert stop.strip()
    for engine in (engine, HFEngine(lm, tokenizer)):
        cut = engine.generate(PROMPTS[:1], max_new_tokens=12, temperature=0, stop=[stop])
        assert cut.finish_reasons == ["stop"]
        assert len(cut.completion_ids[0]) <= 6 and full.completion_ids[0][: len(cut.completion_ids[0])] == cut.completion_ids[0]
        assert stop not in cut.texts[0] and full.texts[0].startswith(cut.texts[0])


def test_lora_weights_are_merged_and_load_weights_takes_new_weights(tokenizer):
    from peft import LoraConfig, get_peft_model

    base = untied_tiny_lm(tokenizer, seed=2)
    policy = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"], init_lora_weights=False))
    engine = StaticCacheEngine(policy, tokenizer, dtype=torch.float32)
    rollouts = engine.generate(PROMPTS[:3], n=2, max_new_tokens=6, seed=0)
    forward, sampled = teacher_forced_logps(policy, rollouts, tokenizer.pad_token_id)  # adapters on
    torch.testing.assert_close(sampled, forward, atol=2e-5, rtol=0)
    with policy.disable_adapter():
        without, _ = teacher_forced_logps(policy, rollouts, tokenizer.pad_token_id)
    assert (without - forward).abs().max() > 1e-3  # the adapter matters, so the check above means something

    with torch.no_grad():  # an "optimizer step": the engine keeps sampling the old weights until told
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.mul_(-1.0)
    stale = engine.generate(PROMPTS[:3], n=2, max_new_tokens=6, seed=0)
    assert stale.logprobs == rollouts.logprobs
    engine.load_weights(policy)
    fresh = engine.generate(PROMPTS[:3], n=2, max_new_tokens=6, seed=0)
    forward, sampled = teacher_forced_logps(policy, fresh, tokenizer.pad_token_id)
    torch.testing.assert_close(sampled, forward, atol=2e-5, rtol=0)


def test_bf16_engine_logprobs_stay_close_to_fp32(lm, tokenizer):
    rollouts = StaticCacheEngine(lm, tokenizer, dtype=torch.bfloat16).generate(PROMPTS, n=2, max_new_tokens=8, seed=0)
    forward, sampled = teacher_forced_logps(lm, rollouts, tokenizer.pad_token_id)
    assert (sampled - forward).abs().mean() < 0.05  # bf16 round-off, not a different distribution


def test_engine_choice(lm, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    assert isinstance(make_engine(lm, tokenizer), StaticCacheEngine)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2))
    assert isinstance(make_engine(gpt2, tokenizer), HFEngine)
    with pytest.raises(ValueError, match="unknown rollout backend"):
        make_engine(lm, tokenizer, backend="tgi")


def test_bad_options_are_refused(lm, tokenizer):
    engine = StaticCacheEngine(lm, tokenizer, dtype=torch.float32)
    for bad in (dict(n=0), dict(temperature=-1.0), dict(top_p=0.0), dict(top_k=-1), dict(max_new_tokens=0)):
        with pytest.raises(ValueError):
            engine.generate(PROMPTS[:1], **bad)


def test_string_and_token_prompts(lm, tokenizer):
    engine = StaticCacheEngine(lm, tokenizer, dtype=torch.float32)
    ids = tokenizer("The movie was")["input_ids"]
    a = engine.generate(["The movie was"], max_new_tokens=5, temperature=0)
    b = engine.generate([ids], max_new_tokens=5, temperature=0)
    assert a.prompt_ids == b.prompt_ids == [ids] and a.completion_ids == b.completion_ids


def test_top_k_and_top_p_truncation():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    assert torch.isinf(truncate_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    probs = torch.softmax(logits, -1)[0]  # ≈ 0.61, 0.22, 0.14, 0.03
    assert torch.isinf(truncate_logits(logits, top_p=0.5)).tolist() == [[False, True, True, True]]
    assert torch.isinf(truncate_logits(logits, top_p=float(probs[0] + 0.01))).tolist() == [[False, False, True, True]]
    assert not torch.isinf(truncate_logits(logits, top_p=1.0)).any()


def test_sampling_frequencies_follow_the_tempered_distribution():
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0]).repeat(20000, 1)
    generator = torch.Generator().manual_seed(0)
    tokens, logps = sample_tokens(logits, temperature=0.5, generator=generator)
    expected = torch.softmax(logits[0] / 0.5, -1)
    observed = torch.bincount(tokens, minlength=4).float() / tokens.numel()
    torch.testing.assert_close(observed, expected, atol=0.01, rtol=0)  # ~5 standard errors
    torch.testing.assert_close(logps, expected.log()[tokens])
    top1, _ = sample_tokens(logits[:5], temperature=1.0, top_k=1, generator=generator)
    assert top1.tolist() == [3] * 5


def test_merged_state_dict_equals_peft_merge_and_unload(tokenizer):
    from peft import LoraConfig, get_peft_model

    from alignkit.rollout.weights import merged_state_dict

    policy = get_peft_model(untied_tiny_lm(tokenizer, seed=3), LoraConfig(r=4, target_modules=["q_proj", "o_proj", "up_proj"], init_lora_weights=False))
    merged = merged_state_dict(policy)
    reference = untied_tiny_lm(tokenizer, seed=3)
    assert set(merged) == set(reference.state_dict())  # plain HF names, nothing LoRA-specific
    expected = policy.merge_and_unload().state_dict()
    for name, tensor in expected.items():
        torch.testing.assert_close(merged[name], tensor)
    assert any(not torch.equal(merged[n], reference.state_dict()[n]) for n in merged if "q_proj" in n)


def test_vllm_engine_pieces_without_vllm(lm, tokenizer):
    from types import SimpleNamespace

    from alignkit.rollout import vllm_engine

    kwargs = vllm_engine.sampling_params_kwargs(n=4, max_new_tokens=16, temperature=0.7, top_p=0.9, top_k=0, stop=["\n\n"], seed=3)
    assert kwargs == dict(n=4, max_tokens=16, temperature=0.7, top_p=0.9, top_k=-1, stop=["\n\n"], seed=3, logprobs=0)
    out = lambda finish, stop: SimpleNamespace(finish_reason=finish, stop_reason=stop)  # noqa: E731
    assert [vllm_engine.finish_reason(o) for o in (out("length", None), out("stop", None), out("stop", 2), out("stop", "\n\n"))] == ["length", "eos", "eos", "stop"]
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install vllm"):
            make_engine(lm, tokenizer, backend="vllm")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_projection_equals_linear_for_any_row_count(dtype):
    from alignkit.rollout.projection import Projection

    torch.manual_seed(0)
    weight, bias = torch.randn(24, 16, dtype=dtype), torch.randn(24, dtype=dtype)
    packed = Projection(weight.clone(), bias, packed=True, rows=4)
    tolerance = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=0.1, rtol=0.02)
    for shape in [(1, 16), (4, 16), (5, 16), (2, 7, 16)]:  # fewer, exactly, more rows than a block; a 3-D batch
        x = torch.randn(*shape, dtype=dtype)
        residual = torch.randn(*shape[:-1], 24, dtype=dtype)
        torch.testing.assert_close(packed(x).float(), torch.nn.functional.linear(x, weight, bias).float(), **tolerance)
        torch.testing.assert_close(packed.add_to(residual, x).float(), (residual + torch.nn.functional.linear(x, weight, bias)).float(), **tolerance)
    packed.repack(8)
    assert packed.rows == 8
    x = torch.randn(3, 16, dtype=dtype)
    torch.testing.assert_close(packed(x).float(), torch.nn.functional.linear(x, weight, bias).float(), **tolerance)
