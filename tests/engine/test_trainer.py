"""The trainer end to end on tiny built-in data: exact resume, NaN stop, aux losses, crashes."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import visionzoo as vz
from visionzoo.engine.checkpoint import load_checkpoint
from visionzoo.engine.config import load_config
from visionzoo.engine.trainer import Trainer
from visionzoo.errors import ConfigError, TrainingError

# 64 training images in batches of 16: 4 steps per epoch.
TINY = [
    "model=resnet18",
    "data=shapes",
    "data.image_size=32",
    "data.train_size=64",
    "data.val_size=32",
    "data.batch_size=16",
    "optim.lr=0.05",
    "trainer.epochs=2",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "trainer.plots=false",
    "trainer.log_every=1",
]


def tiny_cfg(tmp_path: Path, *extra: str):
    return load_config(None, [*TINY, f"trainer.output_dir={tmp_path}", *extra])


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_run_folder_contents(tmp_path):
    trainer = Trainer(tiny_cfg(tmp_path, "trainer.plots=true", "trainer.run_name=r"))
    metrics = trainer.fit()
    run = tmp_path / "r"
    assert trainer.run_dir == run
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "summary.md",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).is_file(), name
    assert list((run / "plots").glob("*.png"))
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, 9))
    val_rows = [r for r in rows if "val/acc1" in r]
    assert len(val_rows) == 2 and {"val/loss", "val/acc5"} <= val_rows[-1].keys()
    assert metrics["val/acc1"] == val_rows[-1]["val/acc1"]
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 8 and state["epoch"] == 2
    # visionzoo.load rebuilds the model from the checkpoint alone, with the trained weights.
    loaded = vz.load(str(run / "checkpoints" / "last.pt"))
    x = torch.randn(2, 3, 32, 32)
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), trainer.model(x))
    assert loaded.class_names == trainer.bundle.class_names


@pytest.mark.parametrize("stop_after", [4, 2], ids=["epoch-boundary", "mid-epoch"])
def test_resume_is_exact(tmp_path, stop_after):
    straight = Trainer(tiny_cfg(tmp_path / "a"))
    straight.fit()
    first = Trainer(tiny_cfg(tmp_path / "b", f"trainer.max_steps={stop_after}"))
    first.fit()
    assert load_checkpoint(first.run_dir / "checkpoints" / "last.pt")["step"] == stop_after
    resumed = Trainer(resume=first.run_dir, overrides=["trainer.max_steps=null"])
    assert resumed.step == stop_after
    resumed.fit()
    assert_same_weights(final_weights(straight.run_dir), final_weights(resumed.run_dir))
    # The metrics file reads as one run: each training step logged once.
    rows = [json.loads(x) for x in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, 9))


def test_resume_with_more_epochs_stretches_the_schedule(tmp_path):
    first = Trainer(
        tiny_cfg(tmp_path / "a", "trainer.epochs=1", "optim.lr=0.1", "sched.warmup_epochs=0")
    )
    first.fit()
    resumed = Trainer(resume=first.run_dir, overrides=["trainer.epochs=2"])
    assert resumed.step == 4
    lrs = []
    for _ in range(4):
        resumed.scheduler.step()
        lrs.append(resumed.optimizer.param_groups[0]["lr"])
    # The cosine of the new 8-step run, continued from step 4, not the finished 4-step one.
    expected = [0.05 * (1 + math.cos(math.pi * s / 8)) for s in range(5, 9)]
    assert lrs == pytest.approx(expected, abs=1e-9)
    resumed2 = Trainer(resume=first.run_dir, overrides=["trainer.epochs=2"])
    resumed2.fit()
    assert load_checkpoint(resumed2.run_dir / "checkpoints" / "last.pt")["step"] == 8


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    trainer = Trainer(tiny_cfg(tmp_path, "trainer.save_every_steps=1"))
    original = trainer.task.training_step
    calls = {"n": 0}

    def poisoned(model, batch):
        out = original(model, batch)
        calls["n"] += 1
        if calls["n"] == 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    trainer.task.training_step = poisoned
    with pytest.raises(
        TrainingError, match=r"loss is nan at step 3 .*last.pt keeps the last good state \(step 2\)"
    ):
        trainer.fit()
    state = load_checkpoint(trainer.run_dir / "checkpoints" / "last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_googlenet_aux_losses_are_logged(tmp_path):
    cfg = tiny_cfg(
        tmp_path,
        "model=googlenet",
        "model.args.aux_logits=true",
        "data.image_size=64",
        "trainer.epochs=1",
        "data.train_size=32",
    )
    trainer = Trainer(cfg)
    trainer.fit()
    rows = [json.loads(x) for x in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss" in r]
    assert {"train/loss_aux1", "train/loss_aux2", "train/loss_main"} <= train_rows[0].keys()
    r = train_rows[0]
    # The task weighs each auxiliary loss by loss.aux_weight (0.3, the paper's value).
    assert r["train/loss"] == pytest.approx(
        r["train/loss_main"] + 0.3 * (r["train/loss_aux1"] + r["train/loss_aux2"]), rel=1e-4
    )


def test_accumulation_and_clipping_and_ema_run(tmp_path):
    trainer = Trainer(
        tiny_cfg(
            tmp_path,
            "trainer.accum_steps=2",
            "trainer.clip_grad_norm=1.0",
            "trainer.ema_decay=0.9",
            "trainer.epochs=1",
        )
    )
    trainer.fit()
    state = load_checkpoint(trainer.run_dir / "checkpoints" / "last.pt")
    assert state["step"] == 2  # 4 batches / 2 accumulated per step
    assert state["ema"] is not None


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.batch_size=512 is larger than the training set"):
        Trainer(tiny_cfg(tmp_path, "data.batch_size=512"))
    with pytest.raises(ConfigError, match="model.args.num_classes=3 disagrees with the data"):
        Trainer(tiny_cfg(tmp_path, "model.args.num_classes=3"))
    with pytest.raises(ConfigError, match="trainer.amp: unknown value 'fp8'"):
        Trainer(tiny_cfg(tmp_path, "trainer.amp=fp8"))


def test_bf16_on_a_cpu_without_native_bf16_warns(tmp_path, monkeypatch):
    import warnings

    import visionzoo.engine.trainer as trainer_mod

    monkeypatch.setattr(trainer_mod, "_cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16.*trainer.amp=none"):
        Trainer(tiny_cfg(tmp_path, "trainer.amp=bf16"))
    monkeypatch.setattr(trainer_mod, "_cpu_has_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(tiny_cfg(tmp_path, "trainer.amp=bf16"))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "visionzoo", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_sigkill_at_random_step_then_resume(tmp_path):
    args = [
        *TINY,
        "trainer.epochs=3",
        "trainer.save_every_steps=1",
        f"trainer.output_dir={tmp_path}",
        "trainer.run_name=killed",
    ]
    run = tmp_path / "killed"
    last = run / "checkpoints" / "last.pt"
    kill_at = random.Random().randint(2, 9)
    proc = subprocess.Popen(
        _cli("train", *args), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if last.exists():
                try:
                    if load_checkpoint(last)["step"] >= kill_at:
                        break
                except Exception as e:  # a reader must never see a torn checkpoint
                    pytest.fail(f"read a broken checkpoint while training: {e}")
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    load_checkpoint(last)  # whatever step it died at, last.pt is whole
    done = subprocess.run(
        _cli("train", "--resume", str(run)), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    state = load_checkpoint(last)
    assert state["step"] == 12 and state["epoch"] == 3
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, 13))
    assert not list((run / "checkpoints").glob(".*.tmp"))


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "visionzoo",
        "train",
        *TINY,
        "trainer.epochs=1",
        "trainer.device=cpu",
        f"trainer.output_dir={tmp_path}",
    ]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(runs) == 1
    state = load_checkpoint(runs[0] / "checkpoints" / "last.pt")
    # 64 images over 2 processes in batches of 16: 2 steps per epoch.
    assert state["step"] == 2
    assert "val/acc1" in state["metrics"]


@pytest.mark.slow
def test_sigint_saves_resumable_checkpoint(tmp_path):
    args = [*TINY, "trainer.epochs=50", f"trainer.output_dir={tmp_path}", "trainer.run_name=int"]
    proc = subprocess.Popen(
        _cli("train", *args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = tmp_path / "int" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (
        metrics.exists() and metrics.read_text().count("\n") >= 2
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "SIGINT received: saved a resumable checkpoint" in out
    state = load_checkpoint(tmp_path / "int" / "checkpoints" / "last.pt")
    assert state["step"] >= 2
