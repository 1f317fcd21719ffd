"""Learning-rate schedules, stepped once per optimiser step (iteration).

Every schedule is a :class:`torch.optim.lr_scheduler.LambdaLR` whose factor function is a
:class:`ScheduleFactor`: a small callable object holding only ints, floats, strings and lists.
``LambdaLR.state_dict()`` stores the ``__dict__`` of callable objects (and ``None`` for plain
functions), so the saved state is loadable with ``torch.load(weights_only=True)`` and carries
the whole schedule: after ``load_state_dict`` the next learning rate is exactly the one the
uninterrupted run would have used.

With ``T = epochs * steps_per_epoch`` iterations and ``W`` warmup iterations, the learning
rate of param group ``g`` at iteration ``i`` (0-based; the first optimiser step uses ``i = 0``)
is ``base_lr[g] * warmup(i) * decay_g(i)``:

- warmup: ``start + (1 - start) * i / W`` for ``i < W`` (linear from
  ``warmup_start_factor * base_lr`` to ``base_lr``), then 1.
- constant: 1.
- step: ``gamma ** (i // step_iters)``: multiplied by ``gamma`` every ``step_size`` epochs.
- multistep: ``gamma ** (number of milestones <= i)`` (milestones in epochs).
- cosine: ``m + (1 - m) * (1 + cos(pi * t / (T - W))) / 2`` with ``t = i - W`` over the
  iterations after warmup, where ``m = min_lr / base_lr[g]``: the floor ``min_lr`` is an
  absolute learning rate, expressed as a fraction of each group's base lr (one factor object
  per group), so every group ends at ``min_lr``. It reaches ``min_lr`` at ``i = T``.
- poly: ``(1 - t / (T - W)) ** power`` (DeepLab's "poly" policy, arXiv:1606.00915, with the
  paper's power 0.9); 0 from ``i = T`` on.

step and multistep count epochs from the start of the run (as the papers' recipes do, e.g.
ResNet's "divide by 10 at 32k and 48k iterations"), so warmup does not shift the milestones;
cosine and poly run over the iterations that remain after warmup. Past ``T`` (e.g. a
``max_steps`` beyond the planned epochs) cosine and poly stay at their final value.
Epoch quantities (warmup, step size, milestones, which may be fractional) are converted to
iterations with ``round``.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from ..errors import ConfigError, did_you_mean
from .config import SchedConfig

__all__ = ["SCHEDULES", "ScheduleFactor", "build_scheduler"]

SCHEDULES = ("constant", "step", "multistep", "cosine", "poly")


class ScheduleFactor:
    """Multiplicative lr factor of one param group at iteration ``i`` (see the module doc).

    Holds only plain values so that ``LambdaLR.state_dict()`` (which stores this object's
    ``__dict__``) is weights_only-safe and restores the schedule exactly.
    """

    def __init__(
        self,
        name: str,
        *,
        total_iters: int,
        warmup_iters: int = 0,
        warmup_start_factor: float = 0.1,
        step_iters: int = 1,
        milestone_iters: list[int] | None = None,
        gamma: float = 0.1,
        power: float = 0.9,
        min_factor: float = 0.0,
    ) -> None:
        self.name = name
        self.total_iters = int(total_iters)
        self.warmup_iters = int(warmup_iters)
        self.warmup_start_factor = float(warmup_start_factor)
        self.step_iters = int(step_iters)
        self.milestone_iters = [int(m) for m in (milestone_iters or [])]
        self.gamma = float(gamma)
        self.power = float(power)
        self.min_factor = float(min_factor)

    def warmup(self, i: int) -> float:
        if i >= self.warmup_iters:
            return 1.0
        s = self.warmup_start_factor
        return s + (1.0 - s) * i / self.warmup_iters

    def decay(self, i: int) -> float:
        if self.name == "constant":
            return 1.0
        if self.name == "step":
            return self.gamma ** (i // self.step_iters)
        if self.name == "multistep":
            return self.gamma ** sum(1 for m in self.milestone_iters if i >= m)
        span = self.total_iters - self.warmup_iters
        if span <= 0:  # warmup covers the whole run: nothing left to decay
            return 1.0
        frac = min(max(i - self.warmup_iters, 0), span) / span  # progress after warmup, 0..1
        if self.name == "cosine":
            m = self.min_factor
            return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * frac))
        if self.name == "poly":
            return (1.0 - frac) ** self.power
        raise ValueError(f"unknown schedule {self.name!r}")  # guarded by build_scheduler

    def __call__(self, i: int) -> float:
        return self.warmup(i) * self.decay(i)

    def __repr__(self) -> str:
        return f"ScheduleFactor({self.__dict__!r})"


def _check(cfg: SchedConfig) -> None:
    if cfg.name not in SCHEDULES:
        raise ConfigError(
            f"sched.name: unknown schedule {cfg.name!r}{did_you_mean(cfg.name, SCHEDULES)}; "
            f"valid: {', '.join(SCHEDULES)}"
        )
    if cfg.warmup_epochs < 0:
        raise ConfigError(f"sched.warmup_epochs must be >= 0, got {cfg.warmup_epochs}")
    if not 0.0 <= cfg.warmup_start_factor <= 1.0:
        raise ConfigError(
            f"sched.warmup_start_factor must be in [0, 1], got {cfg.warmup_start_factor}"
        )
    if cfg.step_size <= 0:
        raise ConfigError(f"sched.step_size must be > 0 (epochs), got {cfg.step_size}")
    if any(m < 0 for m in cfg.milestones):
        raise ConfigError(f"sched.milestones must be >= 0 (epochs), got {cfg.milestones}")
    if list(cfg.milestones) != sorted(cfg.milestones):
        raise ConfigError(f"sched.milestones must be sorted ascending, got {cfg.milestones}")
    if cfg.gamma <= 0:
        raise ConfigError(f"sched.gamma must be > 0, got {cfg.gamma}")
    if cfg.power <= 0:
        raise ConfigError(f"sched.power must be > 0, got {cfg.power}")
    if cfg.min_lr < 0:
        raise ConfigError(f"sched.min_lr must be >= 0, got {cfg.min_lr}")


def build_scheduler(
    optimizer: Optimizer, cfg: SchedConfig, *, steps_per_epoch: int, epochs: int
) -> LRScheduler:
    """A LambdaLR for ``cfg`` over ``epochs * steps_per_epoch`` optimiser steps.

    Call ``scheduler.step()`` after every ``optimizer.step()``. Invalid settings raise
    ConfigError naming the ``sched.*`` key; ``epochs < 1`` names ``trainer.epochs``.
    """
    _check(cfg)
    if epochs < 1:
        raise ConfigError(f"trainer.epochs must be >= 1, got {epochs}")
    if steps_per_epoch < 1:
        # An empty training set is caught when the data is built; this is a caller bug.
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    spe = steps_per_epoch
    total = epochs * spe
    warmup = round(cfg.warmup_epochs * spe)
    if cfg.warmup_epochs > 0:
        warmup = max(warmup, 1)  # a requested warmup shorter than one step still ramps once
    common = dict(
        total_iters=total,
        warmup_iters=warmup,
        warmup_start_factor=cfg.warmup_start_factor,
        step_iters=max(round(cfg.step_size * spe), 1),
        milestone_iters=[round(m * spe) for m in cfg.milestones],
        gamma=cfg.gamma,
        power=cfg.power,
    )
    factors = []
    for g, group in enumerate(optimizer.param_groups):
        base = float(group.get("initial_lr", group["lr"]))  # what LambdaLR takes as base_lr
        if cfg.name == "cosine" and cfg.min_lr > base:
            raise ConfigError(
                f"sched.min_lr ({cfg.min_lr}) is above the learning rate of param group {g} "
                f"({base}); the cosine schedule decays towards min_lr"
            )
        min_factor = cfg.min_lr / base if base > 0 else 0.0
        factors.append(ScheduleFactor(cfg.name, min_factor=min_factor, **common))
    return LambdaLR(optimizer, factors)
