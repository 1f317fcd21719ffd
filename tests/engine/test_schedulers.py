"""LR schedules against closed forms written out here, resume exactness, and config errors."""

from __future__ import annotations

import math

import pytest
import torch

from visionzoo.engine.checkpoint import load_checkpoint, make_state, save_checkpoint
from visionzoo.engine.config import SchedConfig
from visionzoo.engine.schedulers import build_scheduler
from visionzoo.errors import ConfigError

BASE_LR = 0.2
SPE = 10  # steps per epoch
EPOCHS = 12
T = SPE * EPOCHS


def _optimizer(lrs=(BASE_LR,)):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)


def _lrs(cfg: SchedConfig, n: int = T + 5, lrs=(BASE_LR,)) -> list[list[float]]:
    """The lr of every group used at iterations 0..n-1 (the scheduler steps after each)."""
    opt = _optimizer(lrs)
    sched = build_scheduler(opt, cfg, steps_per_epoch=SPE, epochs=EPOCHS)
    out = []
    for _ in range(n):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return out


def _check(cfg: SchedConfig, closed_form, iters=(0, 1, 7, 19, 20, 21, 45, 59, 60, 99, 119, 120)):
    got = _lrs(cfg)
    for i in iters:
        assert got[i][0] == pytest.approx(closed_form(i), rel=1e-12, abs=1e-15), i


def test_constant():
    _check(SchedConfig(name="constant"), lambda i: BASE_LR)


def test_step_multiplies_by_gamma_every_step_size_epochs():
    cfg = SchedConfig(name="step", step_size=2.0, gamma=0.5)
    _check(cfg, lambda i: BASE_LR * 0.5 ** math.floor(i / (2 * SPE)))


def test_multistep_milestones_in_epochs():
    cfg = SchedConfig(name="multistep", milestones=[2.0, 6.0, 10.5], gamma=0.1)

    def closed(i):
        epoch = i / SPE
        return BASE_LR * 0.1 ** sum(epoch >= m for m in (2.0, 6.0, 10.5))

    _check(cfg, closed, iters=(0, 19, 20, 59, 60, 104, 105, 119, 124))


def test_cosine_from_base_to_min_lr():
    cfg = SchedConfig(name="cosine", min_lr=0.01)

    def closed(i):
        t = min(i, T)
        return 0.01 + (BASE_LR - 0.01) * 0.5 * (1 + math.cos(math.pi * t / T))

    _check(cfg, closed)
    got = _lrs(cfg)
    assert got[0][0] == pytest.approx(BASE_LR)
    assert got[T][0] == pytest.approx(0.01)
    assert got[T + 4][0] == pytest.approx(0.01)  # stays at the floor past the planned run


def test_cosine_min_lr_is_absolute_for_every_param_group():
    got = _lrs(SchedConfig(name="cosine", min_lr=0.01), lrs=(0.2, 0.05))
    assert got[0] == pytest.approx([0.2, 0.05])
    assert got[T] == pytest.approx([0.01, 0.01])
    half = T // 2  # cos = 0: halfway between base and floor
    assert got[half] == pytest.approx([(0.2 + 0.01) / 2, (0.05 + 0.01) / 2])


def test_poly_deeplab():
    cfg = SchedConfig(name="poly", power=0.9)
    _check(cfg, lambda i: BASE_LR * (1 - min(i, T) / T) ** 0.9)
    assert _lrs(cfg)[T][0] == 0.0


def test_warmup_then_cosine_over_remaining_iterations():
    cfg = SchedConfig(name="cosine", warmup_epochs=1.5, warmup_start_factor=0.1, min_lr=0.0)
    w = 15  # 1.5 epochs * 10 steps

    def closed(i):
        if i < w:
            return BASE_LR * (0.1 + 0.9 * i / w)
        return BASE_LR * 0.5 * (1 + math.cos(math.pi * (i - w) / (T - w)))

    _check(cfg, closed, iters=(0, 1, 7, 14, 15, 16, 60, 119, 120))
    got = _lrs(cfg)
    assert got[0][0] == pytest.approx(0.1 * BASE_LR)  # warmup start
    assert got[w][0] == pytest.approx(BASE_LR)  # warmup end = the schedule's start


def test_warmup_then_poly():
    cfg = SchedConfig(name="poly", warmup_epochs=2, warmup_start_factor=0.0, power=2.0)
    w = 20

    def closed(i):
        if i < w:
            return BASE_LR * i / w
        return BASE_LR * (1 - (i - w) / (T - w)) ** 2

    _check(cfg, closed)


def test_warmup_with_step_keeps_milestones_absolute():
    cfg = SchedConfig(name="step", warmup_epochs=1, step_size=3, gamma=0.5)

    def closed(i):
        ramp = 0.1 + 0.9 * i / SPE if i < SPE else 1.0
        return BASE_LR * ramp * 0.5 ** (i // 30)

    _check(cfg, closed)


@pytest.mark.parametrize("name", ["constant", "step", "multistep", "cosine", "poly"])
def test_resume_gives_identical_subsequent_lrs(tmp_path, name):
    cfg = SchedConfig(name=name, warmup_epochs=0.7, step_size=1.5, milestones=[3, 8], min_lr=1e-3)
    full = _lrs(cfg, n=T)

    opt = _optimizer()
    sched = build_scheduler(opt, cfg, steps_per_epoch=SPE, epochs=EPOCHS)
    for _ in range(37):
        opt.step()
        sched.step()
    path = tmp_path / "last.pt"
    save_checkpoint(make_state(optimizer=opt.state_dict(), scheduler=sched.state_dict()), path)
    state = load_checkpoint(path)  # weights_only=True

    opt2 = _optimizer()
    sched2 = build_scheduler(opt2, cfg, steps_per_epoch=SPE, epochs=EPOCHS)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    resumed = []
    for _ in range(37, T):
        resumed.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert resumed == [row[0] for row in full[37:]]


def test_state_dict_carries_the_schedule():
    # The factor objects' attributes are restored, so the saved run's schedule wins.
    opt = _optimizer()
    sched = build_scheduler(opt, SchedConfig(name="poly"), steps_per_epoch=SPE, epochs=EPOCHS)
    for _ in range(5):
        opt.step()
        sched.step()
    other = build_scheduler(_optimizer(), SchedConfig(name="constant"), steps_per_epoch=1, epochs=1)
    other.load_state_dict(sched.state_dict())
    assert other.lr_lambdas[0](50) == sched.lr_lambdas[0](50) == pytest.approx((1 - 50 / T) ** 0.9)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"name": "cosin"}, r"sched\.name.*'cosin'.*did you mean cosine.*constant, step"),
        ({"warmup_epochs": -1.0}, r"sched\.warmup_epochs must be >= 0"),
        ({"warmup_start_factor": 1.5}, r"sched\.warmup_start_factor"),
        ({"power": 0.0}, r"sched\.power must be > 0"),
        ({"step_size": 0.0}, r"sched\.step_size must be > 0"),
        ({"milestones": [60.0, 30.0]}, r"sched\.milestones must be sorted"),
        ({"milestones": [-1.0]}, r"sched\.milestones must be >= 0"),
        ({"gamma": 0.0}, r"sched\.gamma must be > 0"),
        ({"min_lr": -0.1}, r"sched\.min_lr must be >= 0"),
        ({"min_lr": 1.0}, r"sched\.min_lr .* above the learning rate"),
    ],
)
def test_errors_name_the_key(changes, match):
    with pytest.raises(ConfigError, match=match):
        build_scheduler(_optimizer(), SchedConfig(**changes), steps_per_epoch=SPE, epochs=EPOCHS)


def test_epochs_must_be_positive():
    with pytest.raises(ConfigError, match=r"trainer\.epochs must be >= 1"):
        build_scheduler(_optimizer(), SchedConfig(), steps_per_epoch=SPE, epochs=0)
