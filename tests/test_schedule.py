"""The learning-rate schedule: values against the formulas, and against transformers' get_scheduler."""

import math

import pytest
import torch

from alignkit.train.schedule import build_scheduler, lr_multiplier


def _lrs(scheduler, steps):
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def _optimizer(lr=2e-3):
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def test_multiplier_formulas():
    assert [lr_multiplier(s, shape="linear", warmup=4, total=12) for s in (0, 2, 4, 8, 12)] == [0, 0.5, 1, 0.5, 0]
    assert lr_multiplier(8, shape="cosine", warmup=4, total=12) == pytest.approx(0.5)
    assert lr_multiplier(6, shape="cosine", warmup=4, total=12) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert [lr_multiplier(s, shape="constant", warmup=2, total=9) for s in (0, 1, 2, 9)] == [0, 0.5, 1, 1]
    assert lr_multiplier(3, shape="linear", warmup=0, total=3) == 0.0  # never negative at the end
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        lr_multiplier(5, shape="step", warmup=0, total=9)


@pytest.mark.parametrize("shape", ["linear", "cosine"])
@pytest.mark.parametrize("warmup,total", [(0, 7), (3, 20), (1, 1)])
def test_equals_transformers_get_scheduler(shape, warmup, total):
    from transformers import get_scheduler

    ours = _lrs(build_scheduler(_optimizer(), shape, warmup=warmup, total=total), total + 1)
    theirs = _lrs(get_scheduler(shape, _optimizer(), num_warmup_steps=warmup, num_training_steps=total), total + 1)
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_state_resumes_mid_schedule():
    first = build_scheduler(_optimizer(), "cosine", warmup=2, total=10)
    _lrs(first, 5)
    resumed = build_scheduler(_optimizer(), "cosine", warmup=2, total=10)
    resumed.load_state_dict(first.state_dict())
    assert _lrs(resumed, 5) == pytest.approx(_lrs(first, 5))
