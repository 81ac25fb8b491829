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
