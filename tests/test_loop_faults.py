"""Numerical faults (non-finite loss or reward, loss spikes: stop or skip and count) and resumes
refused when the settings or data changed."""

import json
from dataclasses import dataclass, field

import pytest
import torch

from alignkit.train.fingerprint import ResumeMismatchError
from alignkit.train.guards import LossSpikeError, NonFiniteLossError
from alignkit.train.logger import read_metrics
from alignkit.train.loop import fit
from tests.test_loop import ToyLM, _cfg, _toy


@dataclass
class FaultyLM(ToyLM):
    """ToyLM whose loss (or reported rewards) goes wrong at chosen optimizer steps (1 micro-batch each)."""

    nan_steps: set = field(default_factory=set)
    spike_steps: set = field(default_factory=set)
    bad_reward_steps: set = field(default_factory=set)

    def loss(self, batch, totals=None):
        loss, metrics = super().loss(batch, totals)
        if self.calls in self.nan_steps:
            loss = loss * float("nan")
        if self.calls in self.spike_steps:
            loss = loss * 100
        if self.calls in self.bad_reward_steps:
            metrics["rewards/judge/non_finite"] = 2.0  # what RewardResult.metrics() reports
        return loss, metrics


def faulty(**faults):
    toy = _toy()
    return FaultyLM(toy.model, toy.train_items, **faults)


def weights(method):
    return {n: p.detach().clone() for n, p in method.model.named_parameters()}


def test_skip_drops_the_step_and_counts_it(tmp_path):
    # Constant LR so a run that skips its 3rd step ends where a clean 2-step run ends.
    skipped = faulty(nan_steps={3})
    summary = fit(skipped, _cfg(tmp_path / "skip", max_steps=3, lr_schedule="constant", on_fault="skip"))
    clean = faulty()
    fit(clean, _cfg(tmp_path / "clean", max_steps=2, lr_schedule="constant"))
    assert summary["skipped_steps"] == 1
    for name, tensor in weights(clean).items():
        assert torch.equal(weights(skipped)[name], tensor), name
    rows = read_metrics(tmp_path / "skip" / "metrics.jsonl")
    assert {k: v for k, v in rows[-1].items() if k != "elapsed_s"} == {"step": 3, "skipped_steps": 1}


def test_default_stops_with_weights_intact_and_says_how_to_skip(tmp_path):
    method = faulty(nan_steps={2})
    with pytest.raises(NonFiniteLossError, match=r"step 2: loss is nan; stopped before the optimizer step, weights untouched.*on_fault=skip"):
        fit(method, _cfg(tmp_path, max_steps=3))


def test_many_faults_in_a_row_stop_even_when_skipping(tmp_path):
    method = faulty(nan_steps=set(range(2, 100)))
    with pytest.raises(NonFiniteLossError, match=r"step 11: .*10 steps in a row skipped"):
        fit(method, _cfg(tmp_path, max_steps=30, on_fault="skip"))


def test_non_finite_rewards_are_faults_like_a_non_finite_loss(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"step 2: non-finite rewards from 'judge' \(2 values\); stopped"):
        fit(faulty(bad_reward_steps={2}), _cfg(tmp_path / "stop", max_steps=3))
    summary = fit(faulty(bad_reward_steps={2}), _cfg(tmp_path / "skip", max_steps=3, on_fault="skip"))
    assert summary["skipped_steps"] == 1


def test_loss_spike_guard(tmp_path):
    # 12 ordinary steps build the history (the guard waits for 10); step 14's loss is 100x.
    quiet = fit(faulty(), _cfg(tmp_path / "quiet", max_steps=16, loss_spike_zscore=6))
    assert "skipped_steps" not in quiet  # no false alarm on an ordinary run
    with pytest.raises(LossSpikeError, match=r"step 14: loss spike: .* standard deviations above the mean of the last 13 steps"):
        fit(faulty(spike_steps={14}), _cfg(tmp_path / "stop", max_steps=16, loss_spike_zscore=6))
    summary = fit(faulty(spike_steps={14}), _cfg(tmp_path / "skip", max_steps=16, loss_spike_zscore=6, on_fault="skip"))
    assert summary["skipped_steps"] == 1
    # Off by default: the same spike trains through.
    assert "skipped_steps" not in fit(faulty(spike_steps={14}), _cfg(tmp_path / "off", max_steps=16))


def test_resume_refuses_changed_settings_or_data(tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    out = tmp_path / "run"
    fit(faulty(nan_steps={1}), _cfg(out, max_steps=4, save_every=2, data=str(data), on_fault="skip"))
    (out / "checkpoints" / "step-4").rename(out / "checkpoints" / "gone")  # as if killed after step 2

    with pytest.raises(ResumeMismatchError, match=r"cannot resume from .*step-2: config field 'lr' was 0\.001, now 0\.002"):
        fit(faulty(), _cfg(out, max_steps=4, save_every=2, data=str(data), on_fault="skip", resume=True, lr=2e-3))
    with pytest.raises(ResumeMismatchError, match=r"config field 'max_steps' was 4, now 8"):
        fit(faulty(), _cfg(out, max_steps=8, save_every=2, data=str(data), on_fault="skip", resume=True))
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "c"}\n')
    with pytest.raises(ResumeMismatchError, match=rf"data file {data} changed \(sha256 [0-9a-f]{{12}} -> [0-9a-f]{{12}}\)"):
        fit(faulty(), _cfg(out, max_steps=4, save_every=2, data=str(data), on_fault="skip", resume=True))
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')

    # Watching differently is not a change: the resume goes through, and the skip count carries over.
    summary = fit(faulty(), _cfg(out, max_steps=4, save_every=2, data=str(data), on_fault="skip", resume=True, log_every=2))
    assert summary["skipped_steps"] == 1
    assert json.loads((out / "checkpoints" / "step-4" / "trainer_state.json").read_text())["guard"]["skipped"] == 1
