"""QLoRA: a LoRA adapter trained on a frozen 4-bit NF4 base (bitsandbytes, which runs on x86 CPUs)."""

import pytest
import torch
from safetensors.torch import load_file

from alignkit.train.dpo import DPOConfig, build_dpo
from alignkit.train.loop import fit
from alignkit.train.rm import RMConfig
from alignkit.train.sft import SFTConfig, build_sft

bnb = pytest.importorskip("bitsandbytes")  # in the test extra; skipped only where it cannot install
FIX = "tests/fixtures"


def _cfg(cls, tmp_path, tiny_dir, **kw):
    base = dict(model=tiny_dir, output_dir=str(tmp_path), batch_size=2, max_steps=3, lr=1e-2, warmup_ratio=0.0,
                lora_r=4, load_in_4bit=True)
    return cls(**(base | kw))


def _linear_4bit(model) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}


def test_qlora_dpo_trains_only_the_adapter_on_a_4bit_base(tmp_path, tiny_dir):
    method = build_dpo(_cfg(DPOConfig, tmp_path, tiny_dir, data=f"{FIX}/pairs_standard.jsonl", reference="adapter"))
    quantised = _linear_4bit(method.model)
    assert len(quantised) == 2 * 7  # every attention and MLP projection of both layers is NF4
    assert all(w.dtype == torch.uint8 for w in quantised.values())

    # Policy == reference (adapter B starts at zero): the DPO loss is ln 2 on the 4-bit base too.
    loss, _ = method.loss(method.collate(method.train_items[:2]))
    assert loss.item() == pytest.approx(0.693147, abs=1e-5)

    trainable = {n for n, p in method.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in method.model.named_parameters() if n in trainable}
    fit(method, method.cfg)
    moved = {n for n, p in method.model.named_parameters() if n in trainable and not torch.equal(p, before[n])}
    assert {n for n in moved if "lora_B" in n}  # the adapter learned
    for name, weight in _linear_4bit(method.model).items():
        assert torch.equal(weight, quantised[name]), name  # the 4-bit base never moves

    # The saved adapter is exactly the trained one.
    saved = load_file(tmp_path / "model" / "adapter_model.safetensors")
    assert len(saved) == 2 * len(quantised)  # A and B for every adapted projection
    params = dict(method.model.named_parameters())
    for key, value in saved.items():
        match = [n for n in trainable if n.replace(".default", "").endswith(key.removeprefix("base_model.model."))]
        assert len(match) == 1 and torch.equal(value, params[match[0]].detach()), key


def test_qlora_sft_lowers_the_loss(tmp_path, tiny_dir):
    cfg = _cfg(SFTConfig, tmp_path, tiny_dir, data=f"{FIX}/sft_messages.jsonl", eval_data=f"{FIX}/sft_messages.jsonl",
               max_steps=6)
    method = build_sft(cfg)
    start = method.evaluate()["loss"]
    summary = fit(method, cfg)
    assert summary["eval"]["eval/loss"] < start


@pytest.mark.parametrize("cls,kw,message", [
    (SFTConfig, {"lora_r": None}, "set lora_r"),
    (SFTConfig, {"merge_lora": True}, "re-quantised"),
    (RMConfig, {}, "not supported for reward models"),
])
def test_qlora_config_errors(tmp_path, tiny_dir, cls, kw, message):
    with pytest.raises(ValueError, match=message):
        _cfg(cls, tmp_path, tiny_dir, data="x.jsonl", **kw)
