"""Learning-rate schedules against their formulas, per parameter group (lr_mult), with warmup and resume."""

from __future__ import annotations

import math

import pytest
import torch

from segdcn.config import ScheduleConfig
from segdcn.engine.schedules import LRSchedule


def optimizer(base_lr: float) -> torch.optim.SGD:
    backbone, head = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    return torch.optim.SGD(
        [{"params": [backbone], "lr_mult": 1.0}, {"params": [head], "lr_mult": 10.0}], lr=base_lr, momentum=0.9
    )


def curve(schedule: LRSchedule, steps: int) -> list[list[float]]:
    """The lr of every group at iterations 0..steps-1, stepping as the trainer does."""
    lrs = []
    for _ in range(steps):
        lrs.append(schedule.get_last_lr())
        schedule.step()
    return lrs


def test_step_schedule_drops_by_gamma_after_two_thirds():
    lr, max_iters = 0.01, 300
    schedule = LRSchedule(optimizer(lr), ScheduleConfig(name="step"), base_lr=lr, max_iters=max_iters)
    for t, (backbone, head) in enumerate(curve(schedule, max_iters)):
        expected = lr if t < 200 else lr * 0.1  # the paper: lr for the first 2/3, lr/10 for the last 1/3
        assert backbone == pytest.approx(expected, rel=1e-12)
        assert head == pytest.approx(10 * expected, rel=1e-12)


def test_step_schedule_with_two_milestones():
    lr, max_iters = 1.0, 100
    cfg = ScheduleConfig(name="step", milestones=[0.5, 0.75], gamma=0.5)
    schedule = LRSchedule(optimizer(lr), cfg, base_lr=lr, max_iters=max_iters)
    backbone = [groups[0] for groups in curve(schedule, max_iters)]
    assert backbone[49] == 1.0 and backbone[50] == 0.5 and backbone[74] == 0.5 and backbone[75] == 0.25


@pytest.mark.parametrize("min_lr", [0.0, 1e-4])
def test_poly_schedule_follows_the_formula(min_lr):
    lr, max_iters, power = 0.01, 50, 0.9
    cfg = ScheduleConfig(name="poly", power=power, min_lr=min_lr)
    schedule = LRSchedule(optimizer(lr), cfg, base_lr=lr, max_iters=max_iters)
    for t, (backbone, head) in enumerate(curve(schedule, max_iters)):
        expected = (lr - min_lr) * (1 - t / max_iters) ** power + min_lr
        assert backbone == pytest.approx(expected, rel=1e-12)
        assert head == pytest.approx(10 * expected, rel=1e-12)
    assert schedule.get_last_lr()[0] == pytest.approx(min_lr, abs=1e-15)  # at max_iters: the floor


def test_linear_warmup_ramps_to_the_schedule():
    lr, max_iters, warmup, factor = 0.01, 100, 10, 0.1
    cfg = ScheduleConfig(name="poly", power=0.9, warmup_iters=warmup, warmup_factor=factor)
    schedule = LRSchedule(optimizer(lr), cfg, base_lr=lr, max_iters=max_iters)
    lrs = [groups[0] for groups in curve(schedule, max_iters)]
    for t in range(max_iters):
        poly = lr * (1 - t / max_iters) ** 0.9
        ramp = factor + (1 - factor) * t / warmup if t < warmup else 1.0
        assert lrs[t] == pytest.approx(poly * ramp, rel=1e-12)
    assert lrs[0] == pytest.approx(lr * factor)
    assert all(a < b for a, b in zip(lrs[:warmup], lrs[1 : warmup + 1], strict=True))


def test_state_dict_resumes_the_curve():
    lr, max_iters = 0.01, 30
    cfg = ScheduleConfig(name="poly", warmup_iters=5)
    whole = curve(LRSchedule(optimizer(lr), cfg, base_lr=lr, max_iters=max_iters), max_iters)
    first = LRSchedule(optimizer(lr), cfg, base_lr=lr, max_iters=max_iters)
    head = curve(first, 12)
    second = LRSchedule(optimizer(lr), cfg, base_lr=lr, max_iters=max_iters)
    second.load_state_dict(first.state_dict())
    assert head + curve(second, max_iters - 12) == whole


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"name": "cosine"}, "schedule.name"),
        ({"name": "step", "milestones": [1.5]}, "schedule.milestones"),
        ({"name": "poly", "min_lr": 1.0}, "schedule.min_lr"),
        ({"name": "poly", "warmup_factor": 2.0}, "schedule.warmup_factor"),
    ],
)
def test_bad_settings_name_their_key(cfg, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        LRSchedule(optimizer(0.01), cfg, base_lr=0.01, max_iters=10)


def test_factor_is_finite_past_max_iters():
    schedule = LRSchedule(optimizer(0.01), ScheduleConfig(name="poly"), base_lr=0.01, max_iters=10)
    assert math.isfinite(schedule.factor(20)) and schedule.factor(20) == 0.0
