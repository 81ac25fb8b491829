"""The shared loop: resume equality, NaN guard, atomic checkpoints, config errors."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from alignkit.models import tiny_model
from alignkit.models.logprobs import response_token_logps
from alignkit.train.checkpoint import list_checkpoints, save_checkpoint
from alignkit.train.config import ConfigError, RunConfig, load_config
from alignkit.train.logger import read_metrics
from alignkit.train.loop import NonFiniteLossError, build_optimizer, fit


@dataclass
class ToyLM:
    """Next-token NLL on random sequences: the smallest real method for exercising the loop."""

    model: torch.nn.Module
    train_items: list
    poison_at_call: int | None = None
    calls: int = 0

    def collate(self, items):
        return torch.stack(items)

    def loss(self, batch, totals=None):
        self.calls += 1
        mask = torch.ones_like(batch)
        token_logps = response_token_logps(self.model, batch, mask, mask)
        loss = -token_logps[:, 1:].mean()
        if self.poison_at_call is not None and self.calls >= self.poison_at_call:
            loss = loss * float("nan")
        return loss, {"nll": loss.item()}

    def evaluate(self):
        return {}

    def save(self, directory: Path):
        self.model.save_pretrained(directory)


def _toy(seed=0, **kw):
    model, _ = tiny_model(seed=seed)
    g = torch.Generator().manual_seed(1)
    items = [torch.randint(3, 500, (12,), generator=g) for _ in range(16)]
    return ToyLM(model, items, **kw)


def _cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), max_steps=6, batch_size=4, lr=1e-3, warmup_ratio=0.0, seed=3)
    return RunConfig(**(base | kw))


def test_resume_reproduces_uninterrupted_trajectory(tmp_path):
    full = fit(_toy(), _cfg(tmp_path, save_every=3))
    losses_full = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    checkpoints = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in checkpoints] == ["step-3", "step-6"]

    # Simulate a crash after step 3: the step-6 checkpoint never got written. Resume starts from
    # differently initialised weights, so only a real restore can reproduce the trajectory.
    shutil.rmtree(checkpoints[-1])
    resumed = fit(_toy(seed=99), _cfg(tmp_path, save_every=3, resume=True))
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in rows] == pytest.approx(losses_full, abs=1e-6)
    assert resumed["train"]["loss"] == pytest.approx(full["train"]["loss"], abs=1e-6)


def test_nan_loss_stops_before_optimizer_and_keeps_checkpoint(tmp_path):
    method = _toy(poison_at_call=4)  # steps 1-3 fine (1 micro-batch each), step 4 NaN
    before = None
    with pytest.raises(NonFiniteLossError, match="step 4"):
        cfg = _cfg(tmp_path, save_every=3)
        fit(method, cfg)
    ck = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in ck] == ["step-3"]
    from safetensors.torch import load_file

    saved = load_file(ck[0] / "trainable.safetensors")
    live = {n: p.detach() for n, p in method.model.named_parameters()}
    # Weights after the failed step equal the step-3 checkpoint: the optimizer never ran on NaN.
    for name, tensor in saved.items():
        assert torch.equal(tensor, live[name]), name
        assert torch.isfinite(tensor).all()


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    method = _toy()
    opt, sched = build_optimizer(list(method.model.parameters()), _cfg(tmp_path), 4)
    save_checkpoint(tmp_path, 1, method.model, opt, sched)
    import alignkit.train.checkpoint as ckpt

    def crash(*a, **k):
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, method.model, opt, sched)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-1"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_keep_only_newest_checkpoints(tmp_path):
    fit(_toy(), _cfg(tmp_path, save_every=1, keep_checkpoints=2))
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["step-5", "step-6"]


def test_run_directory_contents(tmp_path):
    summary = fit(_toy(), _cfg(tmp_path, max_steps=2))
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert json.loads((tmp_path / "config.json").read_text())["max_steps"] == 2
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all("lr" in r and "grad_norm" in r for r in rows)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "model")


def _plain_sgd(monkeypatch):
    """SGD at a constant rate: unlike AdamW, its update scales with the gradient, so a loss that is
    normalised by the wrong count (per micro-batch instead of per global batch) moves the weights
    differently."""
    import alignkit.train.loop as loop

    def build(params, cfg, total_steps):
        optimizer = torch.optim.SGD(params, lr=cfg.lr)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    monkeypatch.setattr(loop, "build_optimizer", build)


def _uneven_method(kind: str, model, tokenizer):
    """Items of very different lengths, so micro-batch means differ from the global-batch mean."""
    from alignkit.train.dpo import DPOConfig, DPOMethod, PairItem
    from alignkit.train.kto import KTOConfig, KTOMethod, pair_for_kl
    from alignkit.train.sft import SFTConfig, SFTMethod
    from tests.pairs import Completion, Pair

    g = torch.Generator().manual_seed(7)
    ids = lambda n: torch.randint(3, 2000, (n,), generator=g).tolist()  # noqa: E731
    lengths = [2, 30, 3, 24, 40, 2, 5, 18]  # response lengths: micro-batches hold very different token counts
    if kind == "sft":
        items = [Completion(ids(4), ids(n)) for n in lengths]
        return SFTMethod(SFTConfig(), model, tokenizer, items)
    if kind == "rpo":  # DPO + a token-mean NLL of the chosen responses
        items = [PairItem(Pair(ids(4), ids(n), ids(6))) for n in lengths]
        return DPOMethod(DPOConfig(loss="rpo", reference="precompute"), model, tokenizer, items)
    items = pair_for_kl([Completion(ids(4), ids(n), label=i % 3 != 0) for i, n in enumerate(lengths)])
    return KTOMethod(KTOConfig(beta=1.0, reference="precompute"), model, tokenizer, items)


@pytest.mark.parametrize("kind", ["sft", "rpo", "kto"])
def test_grad_accumulation_equals_one_big_batch(tmp_path, monkeypatch, kind):
    # One global batch of 4 as 1, 2 or 4 micro-batches of uneven lengths, plain SGD, no clipping:
    # the logged losses and the trained weights must be those of the single big batch.
    # Compared: the logged losses, and each weight's total change over 3 steps (equal up to float
    # summation order: 1e-4 of the change plus a few float32 ulps; a per-micro-batch normalisation
    # is off by percents).
    _plain_sgd(monkeypatch)
    initial = {n: p.detach().clone() for n, p in tiny_model(seed=0)[0].named_parameters()}
    runs = {}
    for accum in (1, 2, 4):
        model, tokenizer = tiny_model(seed=0)
        method = _uneven_method(kind, model, tokenizer)
        out = tmp_path / f"accum{accum}"
        fit(method, _cfg(out, max_steps=3, grad_accum=accum, lr=0.5, max_grad_norm=None))
        runs[accum] = ([r["loss"] for r in read_metrics(out / "metrics.jsonl")],
                       {n: p.detach() - initial[n] for n, p in method.model.named_parameters()})
    losses, updates = runs[1]
    for accum in (2, 4):
        assert runs[accum][0] == pytest.approx(losses, rel=1e-5, abs=1e-6), f"grad_accum={accum}"
        for name, update in runs[accum][1].items():
            scale = updates[name].abs().max().item()
            assert scale > 0, f"{name} did not train"
            assert (update - updates[name]).abs().max().item() <= 1e-4 * scale + 1e-6, f"{name}, grad_accum={accum}"


def test_config_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "run.yaml"
    bad.write_text("lr: -1\nbatch-size: 4\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: field 'lr'"):
        load_config(RunConfig, bad)
    bad.write_text("lr: 1e-4\nbogus: 3\n")
    with pytest.raises(ConfigError, match="field 'bogus'"):
        load_config(RunConfig, bad)
    good = tmp_path / "ok.yaml"
    good.write_text("lr: 1e-4\nmax-steps: 7\n")
    cfg = load_config(RunConfig, good, max_steps=9)
    assert cfg.lr == 1e-4 and cfg.max_steps == 9  # the flag wins over the file
    with pytest.raises(ConfigError) as cross_field:  # a check across fields names the fields in its message
        load_config(RunConfig, good, batch_size=3, grad_accum=2)
    assert "ok.yaml: Value error, batch_size=3 must be divisible by grad_accum=2" in str(cross_field.value)


def test_fused_optimizer_step_equals_plain_adamw(tmp_path):
    # build_optimizer picks the fused kernel for speed; it must be the same AdamW update.
    torch.manual_seed(0)
    fused_params = [torch.nn.Parameter(torch.randn(33, 17)), torch.nn.Parameter(torch.randn(5))]
    plain_params = [torch.nn.Parameter(p.detach().clone()) for p in fused_params]
    initial = [p.detach().clone() for p in fused_params]
    cfg = _cfg(tmp_path, weight_decay=0.1, warmup_ratio=0.0)
    fused, _ = build_optimizer(fused_params, cfg, 10)
    plain = torch.optim.AdamW(plain_params, lr=cfg.lr, weight_decay=0.1, foreach=False)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    for _ in range(3):
        grads = [torch.randn_like(p) for p in fused_params]
        for params, opt in ((fused_params, fused), (plain_params, plain)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    for f, p, before in zip(fused_params, plain_params, initial):
        assert torch.allclose(f, p, atol=1e-6)
        assert not torch.allclose(f, before, atol=1e-4)  # the steps moved the weights


def test_tensorboard_receives_the_logged_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit(_toy(), _cfg(tmp_path, max_steps=3, report_to=["tensorboard"]))
    events = list((tmp_path / "trackers").rglob("events.out.tfevents.*"))
    scalars = {}
    for path in events:
        acc = EventAccumulator(str(path))
        acc.Reload()
        scalars.update({tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]})
    logged = read_metrics(tmp_path / "metrics.jsonl")
    assert scalars["loss"] == pytest.approx([r["loss"] for r in logged], rel=1e-6)
    assert scalars["lr"] == pytest.approx([r["lr"] for r in logged], rel=1e-6)
