"""CPU vs CUDA on the same weights: packed log-probs and gradients, and greedy rollouts.

Skipped without a GPU (CI has none). On a lent H100 (2026-11-25, the same checks as a script)
every difference was ≤ 6e-5: the numbers in docs/quickstart.md.
"""

import copy

import pytest
import torch

from alignkit.models.logprobs import response_token_logps, sequence_logps
from alignkit.models.tiny import tiny_model
from alignkit.rollout import make_engine
from alignkit.train.collate import collate_completions, collate_pairs
from alignkit.train.packing import pack_completions, pack_pairs, packed_pair_logps
from tests.pairs import make_completions, make_pairs

DEVICE = "cuda"
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def models():
    cpu, tokenizer = tiny_model(hidden_size=256, layers=4, heads=4, kv_heads=2)
    with torch.no_grad():  # larger random weights: varied greedy text instead of one repeated token
        g = torch.Generator().manual_seed(0)
        for p in cpu.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.12)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both sides
    return cpu.eval(), copy.deepcopy(cpu).to(DEVICE).eval(), tokenizer


def _on(batch, device):
    return {k: v.to(device) for k, v in batch.items()}


def _sft_logps_and_grad(model, batch, device):
    model.zero_grad()
    b = _on(batch, device)
    logps = response_token_logps(model, b["input_ids"], b["attention_mask"], b["response_mask"], position_ids=b.get("position_ids"))
    (-logps.sum()).backward()
    return float(logps.sum()), model.model.layers[0].self_attn.q_proj.weight.grad.detach().float().cpu()


def test_packed_sft_logps_and_gradients_agree_across_devices(models):
    cpu, gpu, tokenizer = models
    items = make_completions(12, seed=1)
    packed, plain = pack_completions(items, tokenizer.pad_token_id, 512), collate_completions(items, tokenizer.pad_token_id)
    ref_sum, ref_grad = _sft_logps_and_grad(cpu, plain, "cpu")
    for model, device in ((cpu, "cpu"), (gpu, DEVICE)):
        for batch in (packed, plain):
            total, grad = _sft_logps_and_grad(model, batch, device)
            assert total == pytest.approx(ref_sum, abs=1e-3)
            assert torch.allclose(grad, ref_grad, atol=1e-3, rtol=1e-4)


def test_packed_pair_logps_agree_across_devices(models):
    cpu, gpu, tokenizer = models
    pairs = make_pairs(8, seed=2)
    with torch.no_grad():
        plain = collate_pairs(pairs, tokenizer.pad_token_id)
        ref, _ = sequence_logps(cpu, plain["input_ids"], plain["attention_mask"], plain["response_mask"])
        packed, _ = packed_pair_logps(gpu, _on(pack_pairs(pairs, tokenizer.pad_token_id), DEVICE))
    assert torch.allclose(packed.cpu(), ref, atol=1e-3)


def test_greedy_rollouts_on_the_gpu_equal_generate_on_the_cpu(models):
    cpu, gpu, tokenizer = models
    texts = ["How do I bake bread?", "Tell me a joke.", "What is 2+2?", "How can I kill a zombie process?",
             "Write a poem about the sea.", "Hi", "Explain photosynthesis in detail please.", "Why?"]
    prompts = [list(tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                                  tokenize=True, return_dict=True)["input_ids"]) for t in texts]
    reference = make_engine(cpu, tokenizer, backend="hf", dtype=torch.float32, max_batch=8).generate(
        prompts, max_new_tokens=24, temperature=0.0)
    for backend in ("static", "hf"):
        out = make_engine(gpu, tokenizer, backend=backend, dtype=torch.float32, max_batch=8).generate(
            prompts, max_new_tokens=24, temperature=0.0)
        assert out.completion_ids == reference.completion_ids, backend
        for ours, theirs in zip(out.logprobs, reference.logprobs):
            assert max(abs(a - b) for a, b in zip(ours, theirs)) < 1e-3
