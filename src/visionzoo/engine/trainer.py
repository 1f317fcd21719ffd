"""The one trainer every task uses.

The trainer owns devices, mixed precision, channels_last, ``torch.compile``, DDP, gradient
accumulation and clipping, EMA, learning-rate schedules, checkpoints, logging and progress; what
differs per task (data, loss, metrics, prediction) is the Task object's business
(``visionzoo.tasks``). The trainer sums no losses itself: it back-propagates ``out["loss"]``.

Run folder (rank 0 writes it)::

    runs/<time>-<model>-<data>/
        config.yaml  metrics.jsonl  summary.md  checkpoints/{last,best}.pt  plots/*.png

Exact resume: a checkpoint holds the model, optimiser, scheduler, grad scaler, EMA, the step and
the position inside the epoch, and the RNG states. The sampling order of an epoch is a function of
(seed, epoch), so a resumed run draws the same batches; with ``data.num_workers=0`` it also draws
the same augmentations, so its weights equal an uninterrupted run's.
"""

from __future__ import annotations

import math
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from ..errors import ConfigError, TrainingError, VisionZooError
from ..registry import create_model
from ..tasks import get_task
from ..tasks.base import to_device
from . import distributed as dist_utils
from .checkpoint import load_checkpoint, make_state, rng_state, save_checkpoint, set_rng_state
from .config import RunConfig, apply_overrides, config_from_dict, config_to_dict, save_config
from .ema import ModelEma
from .logging import MetricsLogger, read_metrics
from .schedulers import build_scheduler

__all__ = ["Trainer", "Interrupted", "resolve_device"]


class Interrupted(VisionZooError):
    """SIGINT/SIGTERM stopped the run after it saved a resumable checkpoint."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable device is a ConfigError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"trainer.device: unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.device={name} but CUDA is not available; use trainer.device=cpu"
        )
    return device


def _cpu_has_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


class EpochSampler(Sampler[int]):
    """Shuffled (or sequential) indices whose order depends only on (seed, epoch).

    Sharded across DDP ranks like DistributedSampler (padded to equal length) and able to start
    part-way through an epoch, which is what makes resuming exact.
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start = 0  # samples of this rank's share to skip (resume mid-epoch)
        self.per_rank = math.ceil(n / world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        total = self.per_rank * self.world_size
        if total > self.n:  # pad so that every rank gets the same number of samples
            order = torch.cat([order, order[: total - self.n]])
        mine = order[self.rank : total : self.world_size]
        return iter(mine[self.start :].tolist())

    def __len__(self) -> int:
        return self.per_rank - self.start


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def _param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if no_decay_norm_bias and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    groups = _param_groups(model, o.weight_decay, o.no_decay_norm_bias)
    if o.name == "sgd":
        return torch.optim.SGD(
            groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0
        )
    if o.name == "adamw":
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas))
    raise ConfigError(f"optim.name: unknown optimiser {o.name!r}; valid: sgd, adamw")


def _new_run_dir(cfg: RunConfig) -> Path:
    root = Path(cfg.trainer.output_dir)
    name = (
        cfg.trainer.run_name or f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.model.name}-{cfg.data.name}"
    )
    path, k = root / name, 1
    while path.exists():
        k += 1
        path = root / f"{name}-{k}"
    return path


class Trainer:
    """Train ``cfg`` from scratch, or resume the run in ``resume`` (a run folder or checkpoint).

    ``overrides`` (``key=value`` strings) apply on top of the resumed run's config, e.g. to
    extend ``trainer.epochs``.
    """

    def __init__(
        self,
        cfg: RunConfig | None = None,
        *,
        resume: str | Path | None = None,
        overrides: list[str] | None = None,
    ):
        self._resume_state: dict[str, Any] | None = None
        if resume is not None:
            ckpt_path = Path(resume)
            if ckpt_path.is_dir():
                ckpt_path = ckpt_path / "checkpoints" / "last.pt"
            state = load_checkpoint(ckpt_path)
            cfg = apply_overrides(config_from_dict(state["config"]), list(overrides or []))
            self.run_dir = ckpt_path.parent.parent
            self._resume_state = state
        elif cfg is None:
            raise ConfigError("Trainer needs a config or a run to resume")
        else:
            self.run_dir = _new_run_dir(cfg)
        self.cfg = cfg
        t = cfg.trainer
        if t.epochs < 1:
            raise ConfigError(f"trainer.epochs must be >= 1, got {t.epochs}")
        if t.accum_steps < 1:
            raise ConfigError(f"trainer.accum_steps must be >= 1, got {t.accum_steps}")
        if t.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"trainer.amp: unknown value {t.amp!r}; valid: none, bf16, fp16")
        if t.threads:
            torch.set_num_threads(t.threads)

        self.device = resolve_device(t.device)
        self.dist = dist_utils.setup(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.run_dir = Path(dist_utils.broadcast_object(str(self.run_dir), self.dist))
        _seed_everything(t.seed + self.dist.rank, t.deterministic)

        # Task, data and model. A resumed task gets its saved state (e.g. the tokenizer its
        # model was built for) before it builds the data, so nothing is re-derived differently.
        self.task = get_task(cfg)
        task_state = (self._resume_state or {}).get("task_state")
        if task_state and hasattr(self.task, "load_state_dict"):
            self.task.load_state_dict(task_state)
        self.bundle = self.task.build_data()
        if len(self.bundle.train) == 0:
            raise VisionZooError(f"the training set of data.name={cfg.data.name} is empty")
        self.model_kwargs = self.task.model_kwargs(self.bundle)
        for k, v in self.model_kwargs.items():
            if k in cfg.model.args and cfg.model.args[k] != v:
                raise ConfigError(
                    f"model.args.{k}={cfg.model.args[k]!r} disagrees with the data ({k}={v!r})"
                )
        build_kwargs = {**cfg.model.args, **self.model_kwargs}
        self.model = create_model(cfg.model.name, **build_kwargs).to(self.device)
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, cfg)

        self.train_sampler = EpochSampler(
            len(self.bundle.train),
            shuffle=True,
            seed=t.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self.train_loader = self._loader(
            self.bundle.train, cfg.data.batch_size, self.train_sampler, drop_last=True
        )
        if len(self.train_loader) == 0:
            raise ConfigError(
                f"data.batch_size={cfg.data.batch_size} is larger than the training set "
                f"({len(self.bundle.train)} samples per process); lower it"
            )
        val_sampler = EpochSampler(len(self.bundle.val), shuffle=False, seed=0)
        self.val_loader = self._loader(
            self.bundle.val,
            cfg.data.eval_batch_size or cfg.data.batch_size,
            val_sampler,
            drop_last=False,
        )
        self.steps_per_epoch = len(self.train_loader) // t.accum_steps
        if self.steps_per_epoch == 0:
            raise ConfigError(
                "trainer.accum_steps is larger than the number of batches in an epoch"
            )
        self.scheduler = build_scheduler(
            self.optimizer, cfg.sched, steps_per_epoch=self.steps_per_epoch, epochs=t.epochs
        )

        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[t.amp]
        if t.amp == "bf16" and self.device.type == "cpu" and not _cpu_has_bf16():
            warnings.warn(
                "trainer.amp=bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so "
                "bf16 is emulated and usually slower than float32; consider trainer.amp=none",
                stacklevel=2,
            )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.amp == "fp16")
        self.ema = ModelEma(self.model, decay=t.ema_decay) if t.ema_decay else None
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if t.compile:
            self.train_model = torch.compile(self.train_model)

        # Progress counters.
        self.step = 0  # optimiser steps done
        self.epoch = 0  # current epoch (0-based)
        self.batch_in_epoch = 0  # batches of the current epoch already consumed
        self.best: float | None = None
        self.last_metrics: dict[str, float] = {}
        self._stop_signal: int | None = None
        self._saved_step: int | None = None
        self._images_seen = 0
        if self._resume_state is not None:
            self._restore(self._resume_state)

    # ------------------------------------------------------------------ helpers
    def _loader(self, dataset, batch_size: int, sampler: Sampler, drop_last: bool) -> DataLoader:
        workers = self.cfg.data.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=self.bundle.collate_fn,
            pin_memory=self.device.type == "cuda",
            drop_last=drop_last,
            persistent_workers=False,
            # A private generator seeds the workers, so making an iterator draws nothing from
            # the global RNG: a run resumed mid-epoch then sees the same augmentations.
            generator=torch.Generator().manual_seed(self.cfg.trainer.seed),
        )

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def state_dict(self) -> dict[str, Any]:
        return make_state(
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            ema=self.ema.state_dict() if self.ema else None,
            step=self.step,
            epoch=self.epoch,
            batch_in_epoch=self.batch_in_epoch,
            best=self.best,
            metrics=dict(self.last_metrics),
            rng=rng_state(),
            config=config_to_dict(self.cfg),
            model_kwargs=dict(self.model_kwargs),
            class_names=list(self.bundle.class_names),
            task=self.task.name,
            # What the task needs to use the model later (e.g. the tokenizer trained on the
            # captions): plain values only, as everything in a checkpoint.
            task_state=self.task.state_dict() if hasattr(self.task, "state_dict") else None,
        )

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        # Keep the position in the schedule but the schedule of the current config, so that a
        # resume that extends trainer.epochs stretches the schedule (unchanged config: identical).
        sched_state = dict(state["scheduler"])
        sched_state["lr_lambdas"] = self.scheduler.state_dict()["lr_lambdas"]
        self.scheduler.load_state_dict(sched_state)
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.best = state.get("best")
        self.last_metrics = dict(state.get("metrics") or {})
        set_rng_state(state["rng"])
        self._saved_step = self.step

    def save(self, name: str = "last.pt") -> Path:
        path = self.run_dir / "checkpoints" / name
        if self.is_main:
            save_checkpoint(self.state_dict(), path)
            if name == "last.pt":
                self._saved_step = self.step
        return path

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self._stop_signal = signum

    # ------------------------------------------------------------------ main loop
    def fit(self) -> dict[str, Any]:
        """Train to the configured number of epochs (or steps); returns the final metrics."""
        t = self.cfg.trainer
        resumed = self._resume_state is not None
        self._resume_state = None
        logger = None
        if self.is_main:
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            # A process killed while writing a checkpoint (SIGKILL, power loss) leaves its
            # temporary file behind; the checkpoint it was replacing is intact. Clear them.
            for stale in (self.run_dir / "checkpoints").glob(".*.tmp"):
                stale.unlink(missing_ok=True)
            save_config(self.cfg, self.run_dir / "config.yaml")
            if hasattr(self.task, "save_artifacts"):
                self.task.save_artifacts(self.run_dir)  # e.g. the run's tokenizer.json
            logger = MetricsLogger(
                self.run_dir,
                tensorboard=t.tensorboard,
                keep_until_step=self.step if resumed else None,
            )
        old_handlers = {}
        # Signal handlers can only be installed from the main thread.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, self._on_signal)
        start_time = time.perf_counter()
        try:
            self._train_epochs(logger)
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            if logger is not None:
                logger.close()
        elapsed = time.perf_counter() - start_time
        if self.is_main:
            self._finish(elapsed, self._images_seen)
        dist_utils.barrier(self.dist)
        return dict(self.last_metrics)

    def _max_steps(self) -> int:
        total = self.steps_per_epoch * self.cfg.trainer.epochs
        return min(total, self.cfg.trainer.max_steps) if self.cfg.trainer.max_steps else total

    def _train_epochs(self, logger: MetricsLogger | None) -> None:
        cfg, t = self.cfg, self.cfg.trainer
        accum = t.accum_steps
        max_steps = self._max_steps()
        self._images_seen = 0
        if hasattr(self.model, "multi_stage_fit"):  # e.g. R-CNN: trained in stages, not by SGD
            self._multi_stage_fit(logger)
            return
        progress = None
        if self.is_main and t.progress:
            from tqdm.auto import tqdm

            progress = tqdm(
                total=max_steps,
                initial=self.step,
                desc=f"{cfg.model.name}",
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
            )
        window_loss, window_n, window_imgs, window_t0 = 0.0, 0, 0, time.perf_counter()
        try:
            while self.epoch < t.epochs and self.step < max_steps:
                self.train_model.train()
                self.train_sampler.set_epoch(
                    self.epoch, start=self.batch_in_epoch * cfg.data.batch_size
                )
                for batch in self.train_loader:
                    if self.batch_in_epoch >= self.steps_per_epoch * accum:
                        break  # leftover batches that cannot fill an accumulation window
                    batch = to_device(batch, self.device, t.channels_last)
                    micro = self.batch_in_epoch % accum
                    sync = micro == accum - 1
                    ctx = (
                        self.train_model.no_sync()
                        if (self.dist.enabled and not sync and hasattr(self.train_model, "no_sync"))
                        else nullcontext()
                    )
                    with ctx:
                        with self._autocast():
                            out = self.task.training_step(self.train_model, batch)
                        loss = out["loss"]
                        loss_value = float(loss.detach())
                        if not math.isfinite(loss_value):
                            kept = (
                                f"{self.run_dir / 'checkpoints' / 'last.pt'} keeps the last good state "
                                f"(step {self._saved_step})"
                                if self._saved_step is not None
                                else "no checkpoint had been written yet"
                            )
                            raise TrainingError(
                                f"the loss is {loss_value} at step {self.step + 1} (epoch {self.epoch + 1}, "
                                f"batch {self.batch_in_epoch + 1}); stopping. {kept}. Try a lower "
                                f"optim.lr, trainer.clip_grad_norm=1.0, or trainer.amp=none"
                            )
                        self.scaler.scale(loss / accum).backward()
                    self.batch_in_epoch += 1
                    n_images = _batch_size(batch)
                    self._images_seen += n_images
                    window_imgs += n_images
                    window_loss += loss_value
                    window_n += 1
                    if not sync:
                        continue
                    if t.clip_grad_norm:
                        self.scaler.unscale_(self.optimizer)
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_grad_norm)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.scheduler.step()
                    if self.ema is not None:
                        self.ema.update(self.model)
                    self.step += 1

                    if self.step % t.log_every == 0 or self.step == max_steps:
                        dt = max(time.perf_counter() - window_t0, 1e-9)
                        row = {
                            "step": self.step,
                            "epoch": self.epoch + self.batch_in_epoch / len(self.train_loader),
                            "train/loss": window_loss / max(window_n, 1),
                            "train/lr": self.optimizer.param_groups[0]["lr"],
                            "train/images_per_s": window_imgs * self.dist.world_size / dt,
                        }
                        for k, v in out.items():
                            if k != "loss":
                                row[f"train/{k}"] = (
                                    float(v.detach()) if torch.is_tensor(v) else float(v)
                                )
                        if logger is not None:
                            logger.log(row)
                        if progress is not None:
                            progress.set_postfix(
                                loss=f"{row['train/loss']:.4f}",
                                lr=f"{row['train/lr']:.3g}",
                                img_s=f"{row['train/images_per_s']:.0f}",
                            )
                        window_loss, window_n, window_imgs, window_t0 = (
                            0.0,
                            0,
                            0,
                            time.perf_counter(),
                        )
                    if progress is not None:
                        progress.update(1)
                    if t.save_every_steps and self.step % t.save_every_steps == 0:
                        self.save("last.pt")
                    if self._stop_signal is not None:
                        self.save("last.pt")
                        name = signal.Signals(self._stop_signal).name
                        raise Interrupted(
                            f"{name} received: saved a resumable checkpoint at step {self.step} in "
                            f"{self.run_dir / 'checkpoints' / 'last.pt'}; continue with "
                            f"`visionzoo train --resume {self.run_dir}`"
                        )
                    if self.step >= max_steps:
                        break
                epoch_done = self.batch_in_epoch >= self.steps_per_epoch * accum
                if epoch_done:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                last = self.step >= max_steps or self.epoch >= t.epochs
                if (epoch_done and self.epoch % t.eval_every == 0) or last:
                    metrics = self.validate()
                    if self.is_main:
                        row = {
                            "step": self.step,
                            "epoch": self.epoch
                            if epoch_done
                            else self.epoch + self.batch_in_epoch / len(self.train_loader),
                            **metrics,
                        }
                        if logger is not None:
                            logger.log(row)
                        improved = self._update_best(metrics)
                        self.save("last.pt")
                        if improved:
                            self.save("best.pt")
                        if progress is not None:
                            shown = {
                                k.split("/")[-1]: f"{v:.4f}"
                                for k, v in metrics.items()
                                if isinstance(v, float)
                            }
                            progress.write(
                                f"epoch {self.epoch}: "
                                + " ".join(f"{k}={v}" for k, v in shown.items())
                            )
                elif epoch_done:
                    self.save("last.pt")
        finally:
            if progress is not None:
                progress.close()

    def _multi_stage_fit(self, logger: MetricsLogger | None) -> None:
        """A model with its own multi-stage training (``multi_stage_fit(bundle, cfg, run_dir)``,
        e.g. R-CNN's fine-tuning, SVMs and box regressors) trains itself; the trainer then
        evaluates, logs and checkpoints it like any run."""
        self.model.multi_stage_fit(self.bundle, self.cfg, self.run_dir)
        self.epoch, self.batch_in_epoch, self.step = self.cfg.trainer.epochs, 0, self._max_steps()
        metrics = self.validate()
        if self.is_main:
            if logger is not None:
                logger.log({"step": self.step, "epoch": self.epoch, **metrics})
            self._update_best(metrics)
            self.save("last.pt")
            self.save("best.pt")

    def _update_best(self, metrics: dict[str, float]) -> bool:
        key, mode = self.task.monitor, self.task.monitor_mode
        value = metrics.get(key)
        if value is None or not math.isfinite(value):
            return False
        if self.best is None or (value > self.best if mode == "max" else value < self.best):
            self.best = float(value)
            return True
        return False

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Evaluate the EMA model if there is one, else the model, on the validation set (rank 0)."""
        metrics: dict[str, float] = {}
        if self.is_main:
            model = self.ema.module if self.ema is not None else self.model
            was_training = model.training
            model.eval()
            with self._autocast():
                metrics = {
                    k: float(v) for k, v in self.task.evaluate(model, self.val_loader).items()
                }
            model.train(was_training)
            self.last_metrics = metrics
        metrics = dist_utils.broadcast_object(metrics, self.dist)
        self.last_metrics = metrics
        return metrics

    def _finish(self, elapsed: float, images_seen: int) -> None:
        rows = read_metrics(self.run_dir / "metrics.jsonl")
        plots: list[Path] = []
        if self.cfg.trainer.plots:
            from ..analysis import plots as plot_utils

            plots = plot_utils.plot_curves(rows, self.run_dir / "plots")
            last_eval = getattr(self.task, "last_eval", None) or {}
            cm = last_eval.get("confusion_matrix")
            if cm is not None:
                path = self.run_dir / "plots" / "confusion_matrix.png"
                plot_utils.plot_confusion_matrix(cm, list(self.bundle.class_names), path)
                plots.append(path)
        n_params = sum(p.numel() for p in self.model.parameters())
        lines = [
            f"# {self.cfg.model.name} on {self.cfg.data.name}",
            "",
            f"- task: {self.task.name}",
            f"- parameters: {n_params:,}",
            f"- steps: {self.step} ({self.epoch} epochs of {self.steps_per_epoch} steps)",
            f"- time this session: {elapsed:.1f} s, {images_seen / max(elapsed, 1e-9):.0f} images/s",
            f"- device: {self.device}, processes: {self.dist.world_size}, amp: {self.cfg.trainer.amp}",
            f"- best {self.task.monitor}: {self.best if self.best is not None else 'n/a'}",
            "",
            "## Final validation metrics",
            "",
        ]
        lines += [f"- {k}: {v:.4f}" for k, v in self.last_metrics.items()]
        report = self.task.report() if hasattr(self.task, "report") else ""
        if report:
            lines += ["", "## Last evaluation in detail", "", report]
        if plots:
            lines += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
        lines += ["", 'Rebuild the model with `visionzoo.load("checkpoints/best.pt")`.']
        (self.run_dir / "summary.md").write_text("\n".join(lines) + "\n")


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    if torch.is_tensor(first):
        return int(first.shape[0])
    if isinstance(first, (list, tuple)):
        return len(first)
    return 1
