"""DPO trainer on tiny models: reference modes, what moves, resume, parity of packing."""

import math

import pytest
import torch

from alignkit.models import tiny_model
from alignkit.models.logprobs import sequence_logps
from alignkit.train.collate import collate_pairs
from alignkit.train.dpo import DPOConfig, DPOMethod, PairItem
from alignkit.train.lora import apply_lora
from alignkit.train.loop import fit
from alignkit.train.packing import pack_pairs, packed_pair_logps
from tests.pairs import make_pairs


def _method(tmp_path, *, lora=False, **cfg):
    model, tokenizer = tiny_model(seed=0)
    config = DPOConfig(output_dir=str(tmp_path), batch_size=4, max_steps=3, lr=1e-3, warmup_ratio=0.0,
                       lora_r=8 if lora else None, **cfg)
    if lora:
        model = apply_lora(model, config)
    items = [PairItem(p) for p in make_pairs(8)]
    return DPOMethod(config, model, tokenizer, items, [PairItem(p) for p in make_pairs(4, seed=1)])


def test_packed_pairs_equal_separate_rows(tiny):
    model, _ = tiny
    pairs = make_pairs(5)
    packed, packed_lengths = packed_pair_logps(model, pack_pairs(pairs, 2))
    plain = collate_pairs(pairs, 2)
    sums, lengths = sequence_logps(model, plain["input_ids"], plain["attention_mask"], plain["response_mask"])
    assert torch.allclose(packed, sums, atol=1e-4)
    assert torch.equal(packed_lengths, lengths)


@pytest.mark.parametrize("reference,lora", [("copy", False), ("precompute", False), ("adapter", True), ("precompute", True)])
def test_first_step_loss_is_ln2(tmp_path, reference, lora):
    method = _method(tmp_path, lora=lora, reference=reference)
    loss, metrics = method.loss(method.collate(method.train_items[:4]))
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)
    assert metrics["rewards/margins"] == pytest.approx(0.0, abs=1e-5)


def test_reference_modes_agree(tmp_path):
    lora = _method(tmp_path / "a", lora=True, reference="adapter")
    # Move the adapter away from zero so "adapter disabled" differs from the policy.
    with torch.no_grad():
        for name, p in lora.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.05)
    batch = lora.collate(lora.train_items[:4])
    adapter_off = lora.reference.logps(batch)
    frozen, _ = tiny_model(seed=0)  # the same base weights, never wrapped
    from alignkit.train.reference import Reference

    via_copy = Reference("copy", frozen, DPOMethod.score).logps(batch)
    assert torch.allclose(adapter_off, via_copy, atol=1e-5)
    policy = DPOMethod.score(lora.model, batch)
    assert not torch.allclose(policy, adapter_off, atol=1e-3)

    pre = _method(tmp_path / "b", reference="precompute")
    fly = _method(tmp_path / "c", reference="copy")
    items = pre.train_items[:4]
    assert torch.allclose(pre.collate(items)["ref_logps"], fly.reference.logps(fly.collate(fly.train_items[:4])), atol=1e-5)


def test_sparse_tied_embedding_grad_equals_dense(tmp_path):
    from alignkit.train.setup import sparse_tied_embedding_grad

    dense, sparse = _method(tmp_path / "d"), _method(tmp_path / "s")
    assert sparse_tied_embedding_grad(sparse.model)
    assert sparse.model.get_input_embeddings().sparse and not dense.model.get_input_embeddings().sparse
    for method in (dense, sparse):
        method.loss(method.collate(method.train_items[:4]))[0].backward()
    grads = {n: p.grad for n, p in dense.model.named_parameters()}
    for name, p in sparse.model.named_parameters():
        assert p.grad.layout == torch.strided, name  # what fused AdamW and clipping need
        assert torch.allclose(p.grad, grads[name], atol=1e-6), name
    # The real run: every parameter moves under the fused optimizer.
    before = _snapshot(sparse.model)
    fit(sparse, sparse.cfg)
    assert all(not torch.equal(p, before[n]) for n, p in sparse.model.named_parameters())


def test_sparse_embedding_grad_only_for_trainable_tied_weights(tmp_path):
    from alignkit.train.setup import sparse_tied_embedding_grad

    assert not sparse_tied_embedding_grad(_method(tmp_path / "lora", lora=True).model)  # frozen embedding
    untied, _ = tiny_model(seed=0)
    untied.lm_head.weight = torch.nn.Parameter(untied.lm_head.weight.detach().clone())
    assert not sparse_tied_embedding_grad(untied)
    assert not untied.get_input_embeddings().sparse


def _snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def test_full_finetune_moves_policy_not_reference(tmp_path):
    method = _method(tmp_path, reference="copy")
    policy_before, ref_before = _snapshot(method.model), _snapshot(method.reference.frozen)
    fit(method, method.cfg)
    moved = [n for n, p in method.model.named_parameters() if not torch.equal(p, policy_before[n])]
    assert len(moved) == len(policy_before)
    assert all(torch.equal(p, ref_before[n]) for n, p in method.reference.frozen.named_parameters())


def test_lora_moves_only_adapter(tmp_path):
    method = _method(tmp_path, lora=True)
    before = _snapshot(method.model)
    fit(method, method.cfg)
    for name, p in method.model.named_parameters():
        changed = not torch.equal(p, before[name])
        if "lora_B" in name:
            assert changed, name
        elif "lora_" not in name:
            assert not changed, name
    from peft import PeftModel

    reloaded = PeftModel.from_pretrained(tiny_model(seed=0)[0], tmp_path / "model")
    batch = method.collate(method.train_items[:2])
    assert torch.allclose(DPOMethod.score(reloaded, batch), DPOMethod.score(method.model.eval(), batch), atol=1e-4)


@pytest.mark.parametrize("loss", ["ipo", "cdpo", "hinge", "rpo", "simpo", "orpo"])
def test_every_loss_trains(tmp_path, loss):
    method = _method(tmp_path, loss=loss, label_smoothing=0.1 if loss == "cdpo" else 0.0)
    assert (method.reference is None) == (loss in ("simpo", "orpo"))  # reference-free losses load none
    before = _snapshot(method.model)
    summary = fit(method, method.cfg)
    assert math.isfinite(summary["train"]["loss"])
    assert any(not torch.equal(p, before[n]) for n, p in method.model.named_parameters())


def test_margins_and_accuracy_rise_on_train_split(tmp_path):
    model, tokenizer = tiny_model(seed=0)
    cfg = DPOConfig(output_dir=str(tmp_path), batch_size=8, max_steps=12, lr=3e-3, warmup_ratio=0.0, beta=0.5)
    items = [PairItem(p) for p in make_pairs(8)]
    method = DPOMethod(cfg, model, tokenizer, items, items)
    start = method.evaluate()
    fit(method, cfg)
    end = method.evaluate()
    assert end["rewards/margins"] > start["rewards/margins"] + 0.5
    assert start["rewards/accuracies"] == 0.0  # policy == reference: no pair is ranked yet
    assert end["rewards/accuracies"] >= 0.875


def test_predictor_index_stays_on_the_batch_device():
    """Every index tensor is made on the batch's device: a CPU ``arange`` broke DPO on CUDA.

    The meta device stands in for CUDA here: mixing it with a CPU tensor fails the same way.
    """
    from alignkit.train.packing import predictor_index

    response_mask = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0]])
    prompt_lengths = torch.tensor([2, 1])
    expected = predictor_index(response_mask, prompt_lengths)
    assert expected.tolist() == [[-1, 0, 1, 2, 3, 4], [-1, 0, 1, 2, 3, 4]]
    on_meta = predictor_index(response_mask.to("meta"), prompt_lengths.to("meta"))
    assert on_meta.device.type == "meta" and on_meta.shape == expected.shape
