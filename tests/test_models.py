import json

import pytest
import torch

from alignkit.models.logprobs import full_logits_token_logps, response_token_logps, sequence_logps


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 1000, (3, 14), generator=g)
    attention = torch.ones_like(ids)
    attention[2, 10:] = 0  # right padding on the last row
    response = torch.zeros_like(ids)
    response[0, 6:] = 1
    response[1, 3:9] = 1
    response[2, 5:10] = 1
    return ids, attention, response


def test_selective_logps_equal_full_logits(tiny):
    model, _ = tiny
    ids, attention, response = _batch()
    selective = response_token_logps(model, ids, attention, response, chunk_size=4)
    full = full_logits_token_logps(model, ids, attention, response)
    assert torch.allclose(selective, full, atol=1e-5)
    assert (selective[response == 0] == 0).all()
    assert (selective[response == 1] < 0).all()


def test_sequence_logps_sum_and_lengths(tiny):
    model, _ = tiny
    ids, attention, response = _batch(1)
    sums, lengths = sequence_logps(model, ids, attention, response)
    token = full_logits_token_logps(model, ids, attention, response)
    assert torch.allclose(sums, token.sum(-1), atol=1e-5)
    assert lengths.tolist() == [8.0, 6.0, 5.0]


def test_selective_logps_gradients_match(tiny):
    model, _ = tiny
    ids, attention, response = _batch(2)
    response_token_logps(model, ids, attention, response).sum().backward()
    selective = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    full_logits_token_logps(model, ids, attention, response).sum().backward()
    for n, p in model.named_parameters():
        assert torch.allclose(selective[n], p.grad, atol=1e-5), n


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_head_logps_function_equals_autograd(dtype):
    from alignkit.models.logprobs import HeadLogps

    g = torch.Generator().manual_seed(0)
    vocab = 3000
    hidden = torch.randn(37, 16, generator=g).to(dtype).requires_grad_()
    weight = torch.randn(vocab, 16, generator=g).to(dtype).requires_grad_()
    targets = torch.randint(0, vocab, (37,), generator=g)
    upstream = torch.randn(37, generator=g)  # a weighted sum, so each row's gradient is scaled differently

    plain = torch.log_softmax((hidden @ weight.t()).float(), -1).gather(-1, targets[:, None]).squeeze(-1)
    grads_plain = torch.autograd.grad((plain * upstream).sum(), (hidden, weight))
    fused = HeadLogps.apply(hidden, weight, targets)
    grads_fused = torch.autograd.grad((fused * upstream).sum(), (hidden, weight))

    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert torch.allclose(fused, plain, atol=tol)
    for a, b in zip(grads_fused, grads_plain):
        assert a.dtype == dtype
        assert torch.allclose(a.float(), b.float(), atol=tol, rtol=tol)


def test_head_logps_refuses_a_second_backward():
    from alignkit.models.logprobs import HeadLogps

    weight = torch.randn(50, 8, requires_grad=True)
    out = HeadLogps.apply(torch.randn(4, 8), weight, torch.tensor([1, 2, 3, 4])).sum()
    out.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace"):
        out.backward()


@pytest.mark.parametrize("bf16", ["autocast", "weights"])
def test_cpu_bf16_logps_see_few_shapes_and_equal_the_unpadded_ones(tiny, monkeypatch, bf16):
    """oneDNN keeps a compiled kernel per bf16 matmul shape: widths and scored rows are padded up to
    multiples of 16, so batches of 17 to 47 tokens meet two widths, not 31; the log-probs
    and gradients are those of the unpadded batch (full logits, no padding)."""
    import contextlib

    from alignkit.models import logprobs

    model, _ = tiny
    if bf16 == "weights":
        model = model.to(torch.bfloat16)
    context = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 == "autocast" else contextlib.nullcontext
    widths, rows, seen = set(), set(), []
    model.model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"].shape[1]), with_kwargs=True)
    apply = logprobs.HeadLogps.apply
    monkeypatch.setattr(logprobs.HeadLogps, "apply", lambda h, w, t: rows.add(h.shape[0]) or apply(h, w, t))
    g = torch.Generator().manual_seed(0)
    for width in range(17, 48):
        ids = torch.randint(3, 1000, (2, width), generator=g)
        attention, response = torch.ones_like(ids), torch.zeros_like(ids)
        attention[1, width - 5 :] = 0
        response[0, 4:] = 1
        response[1, 4 : width - 5] = 1
        with context():
            seen.clear()
            padded = response_token_logps(model, ids, attention, response)
            widths.update(seen)
            model.zero_grad()
            padded.sum().backward()
            padded_grads = [p.grad.clone() for p in model.parameters()]
            model.zero_grad()
            full = full_logits_token_logps(model, ids, attention, response)
            full.sum().backward()
        assert torch.allclose(padded, full.to(padded.dtype), atol=0.1), width  # bf16: a few 1e-2 apart
        for a, b in zip(padded_grads, (p.grad for p in model.parameters())):
            assert torch.allclose(a.float(), b.float(), atol=0.05, rtol=0.05), width
    assert widths == {32, 48}
    assert rows == {32, 48, 64, 80, 96}  # 26 to 81 scored tokens


def test_tiny_model_has_real_chat_template(tiny):
    model, tokenizer = tiny
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")
    assert model.config.vocab_size == len(tokenizer)
    assert sum(p.numel() for p in model.parameters()) < 5_000_000


def test_saved_tiny_model_reloads(tiny_dir):
    from transformers import AutoModelForCausalLM

    from alignkit.models import load_policy

    a = AutoModelForCausalLM.from_pretrained(tiny_dir)
    b = load_policy(tiny_dir)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.allclose(a(ids).logits, b(ids).logits)


def test_bundled_alias_resolves_to_safetensors_cache():
    from alignkit.models import resolve_model_path

    path = resolve_model_path("smollm2-135m-instruct")
    config = json.loads(open(f"{path}/config.json").read())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config
    import os

    assert os.path.exists(f"{path}/model.safetensors")


def test_unknown_local_path_passes_through():
    from alignkit.models import resolve_model_path

    assert resolve_model_path("some-org/some-model") == "some-org/some-model"


@pytest.mark.slow
def test_bundled_model_answers_fried_rice():
    from alignkit.doctor import chat
    from alignkit.models import load_policy, load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    model = load_policy("smollm2-135m-instruct")
    reply = chat(model, tokenizer, "How do I make fried rice?", max_new_tokens=48)
    assert "rice" in reply.lower()
