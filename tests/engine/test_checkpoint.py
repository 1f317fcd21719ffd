"""Checkpoint files: atomic writes, weights_only loads, errors, RNG state, rebuilding models."""

from __future__ import annotations

import os
import random
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import visionzoo
from visionzoo.engine import checkpoint as ckpt
from visionzoo.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    load_checkpoint,
    load_model,
    make_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from visionzoo.engine.config import RunConfig, config_to_dict
from visionzoo.engine.ema import ModelEma
from visionzoo.errors import CheckpointError

# ---------------------------------------------------------------------------------------------
# save / load


def test_make_state_adds_format_and_version():
    state = make_state(step=3)
    assert state == {"format": "visionzoo-checkpoint", "version": 1, "step": 3}
    assert (CHECKPOINT_FORMAT, CHECKPOINT_VERSION) == ("visionzoo-checkpoint", 1)
    with pytest.raises(TypeError, match="'version' is set by make_state"):
        make_state(version=2)


def test_round_trip_plain_values_tensors_and_numpy(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    state = make_state(
        model=model.state_dict(),
        metrics={"val/acc": np.float64(0.5), "epoch": np.int64(3), "ok": True, "none": None},
        history=[(1, 0.5), (2, 0.25)],
        confusion=np.arange(6, dtype=np.int32).reshape(2, 3),
        keys={0: "a", 1.5: ("b", b"c")},
    )
    path = tmp_path / "sub" / "last.pt"  # parent directories are created
    save_checkpoint(state, path)
    raw = torch.load(path, weights_only=True)  # readable without trusting the file
    assert raw["format"] == CHECKPOINT_FORMAT and raw["version"] == CHECKPOINT_VERSION
    out = load_checkpoint(path)
    for k, v in model.state_dict().items():
        assert torch.equal(out["model"][k], v)
    # Module version metadata survives, so load_state_dict upgrades old layouts as usual.
    assert out["model"]._metadata["1"]["version"] == 2
    assert out["metrics"] == {"val/acc": 0.5, "epoch": 3, "ok": True, "none": None}
    assert type(out["metrics"]["epoch"]) is int
    assert out["history"] == [(1, 0.5), (2, 0.25)]
    assert torch.equal(out["confusion"], torch.arange(6, dtype=torch.int32).reshape(2, 3))
    assert out["keys"] == {0: "a", 1.5: ("b", b"c")}


Pair = namedtuple("Pair", "a b")


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"a": {"b": [1, object()]}}, r"state\['a'\]\['b'\]\[1\] has type builtins\.object"),
        ({"fn": lambda x: x}, r"state\['fn'\] has type builtins\.function"),
        ({"p": Pair(1, 2)}, r"state\['p'\] has type .*Pair"),
        ({"s": {1, 2}}, r"state\['s'\] has type builtins\.set"),
        ({"arr": np.array([object()])}, r"state\['arr'\] is a numpy object array"),
        ({"m": nn.Linear(1, 1)}, r"state\['m'\] has type torch\.nn\.modules\.linear\.Linear"),
    ],
)
def test_unsupported_values_raise_type_error_naming_the_key_path(tmp_path, value, where):
    with pytest.raises(TypeError, match=where):
        save_checkpoint(make_state(**value), tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_write_is_atomic_temp_file_fsync_replace(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    replaced, synced = [], []
    real_replace, real_fsync = os.replace, os.fsync

    def spy_replace(src, dst):
        replaced.append((Path(src), Path(dst)))
        real_replace(src, dst)

    def spy_fsync(fd):
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(ckpt.os, "replace", spy_replace)
    monkeypatch.setattr(ckpt.os, "fsync", spy_fsync)
    save_checkpoint(make_state(step=1), path)
    [(src, dst)] = replaced
    assert dst == path and src.parent == tmp_path
    assert src.name.startswith(".") and src.name.endswith(".tmp")
    assert len(synced) == 2  # the file, then the directory holding the rename
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert load_checkpoint(path)["step"] == 1


@pytest.mark.parametrize("fail_in", ["save", "replace"])
def test_crash_while_writing_keeps_the_old_file(tmp_path, monkeypatch, fail_in):
    path = tmp_path / "last.pt"
    save_checkpoint(make_state(step=1, w=torch.ones(1000)), path)

    def crash_mid_save(obj, f):
        f.write(b"PK\x03\x04 half a zip")  # a partial write, then the process dies
        raise KeyboardInterrupt

    def crash_replace(src, dst):
        raise OSError("disk full")

    if fail_in == "save":
        monkeypatch.setattr(ckpt.torch, "save", crash_mid_save)
        with pytest.raises(KeyboardInterrupt):
            save_checkpoint(make_state(step=2), path)
    else:
        monkeypatch.setattr(ckpt.os, "replace", crash_replace)
        with pytest.raises(OSError, match="disk full"):
            save_checkpoint(make_state(step=2), path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the temporary file is gone


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint '.*nope\.pt' does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is not a file"):
        load_checkpoint(tmp_path)


def test_truncated_and_corrupt_files(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(make_state(w=torch.randn(4096), step=7), good)
    data = good.read_bytes()
    bad = tmp_path / "bad.pt"
    for n in (0, 3, 200, len(data) // 2, len(data) - 1):
        bad.write_bytes(data[:n])
        with pytest.raises(
            CheckpointError, match=r"checkpoint '.*bad\.pt' is truncated or corrupt"
        ):
            load_checkpoint(bad)
    bad.write_bytes(b"definitely not a checkpoint" * 20)
    with pytest.raises(CheckpointError, match=r"'.*bad\.pt' is truncated or corrupt"):
        load_checkpoint(bad)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "version": 1, "x": _Evil()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt' holds Python objects .*weights_only"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([1, 2], "is not a visionzoo checkpoint"),
        ({"model": {}}, "is not a visionzoo checkpoint"),
        ({"format": "other", "version": 1}, "is not a visionzoo checkpoint"),
        ({"format": CHECKPOINT_FORMAT, "version": "1"}, r"its 'version' is '1', not an int"),
        ({"format": CHECKPOINT_FORMAT, "version": 99}, r"format version 99, newer"),
    ],
)
def test_not_a_visionzoo_checkpoint(tmp_path, obj, match):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# RNG state


def _draws():
    draws = (
        [random.random() for _ in range(3)] + [random.gauss(0, 1)],
        np.random.rand(3).tolist() + [float(np.random.randn())],
        torch.rand(3).tolist() + torch.randn(1).tolist(),
    )
    if torch.cuda.is_available():  # on GPU machines the CUDA generators are covered too
        draws += (torch.rand(3, device="cuda").tolist(),)
    return draws


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leave a cached gaussian in Python's state
    np.random.randn()
    save_checkpoint(make_state(rng=rng_state()), tmp_path / "r.pt")
    expected = _draws()
    assert _draws() != expected  # the generators moved on
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert _draws() == expected


def test_rng_state_is_plain():
    state = rng_state()
    assert set(state) >= {"python", "numpy", "torch"}
    assert state["python"]["version"] == 3 and len(state["python"]["state"]) == 625
    assert state["numpy"]["key"].dtype == torch.int64 and state["numpy"]["key"].shape == (624,)
    assert ("cuda" in state) == torch.cuda.is_available()


# ---------------------------------------------------------------------------------------------
# load_model


def _tiny(num_classes: int = 3, hidden: int = 5) -> nn.Module:
    return nn.Sequential(
        nn.Linear(4, hidden), nn.BatchNorm1d(hidden), nn.Linear(hidden, num_classes)
    )


@pytest.fixture
def tiny_registry(monkeypatch):
    calls = []

    def fake_create_model(name, **kwargs):
        calls.append((name, kwargs))
        if name != "tiny":
            raise visionzoo.errors.UnknownModelError(name, ["tiny"])
        return _tiny(**kwargs)

    monkeypatch.setattr(ckpt, "create_model", fake_create_model)
    return calls


def _train_state(model, cfg, ema=None, **extra):
    return make_state(
        config=config_to_dict(cfg),
        model_kwargs={"num_classes": 3},
        model=model.state_dict(),
        **({"ema": ema} if ema is not None else {}),
        **extra,
    )


def test_load_model_rebuilds_from_config_and_prefers_ema(tmp_path, tiny_registry):
    cfg = RunConfig()
    cfg.model.name = "tiny"
    cfg.model.args = {"hidden": 6}
    model = _tiny(3, 6)
    ema = ModelEma(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    path = tmp_path / "best.pt"
    state = _train_state(model, cfg, ema=ema.state_dict(), class_names=["a", "b", "c"])
    save_checkpoint(state, path)
    x = torch.randn(2, 4)

    loaded = load_model(path)  # default: the EMA weights, which best.pt was evaluated with
    assert tiny_registry[-1] == ("tiny", {"hidden": 6, "num_classes": 3})
    assert not loaded.training
    assert loaded.visionzoo_weights == "ema"
    assert loaded.class_names == ["a", "b", "c"]
    assert loaded.visionzoo_config == config_to_dict(cfg)
    torch.testing.assert_close(loaded(x), ema.module(x), rtol=0, atol=0)

    raw = load_model(path, ema=False)
    assert raw.visionzoo_weights == "model"
    torch.testing.assert_close(raw(x), model.eval()(x), rtol=0, atol=0)
    assert not torch.allclose(raw(x), loaded(x))

    # A plain state dict under "ema" works too.
    save_checkpoint(_train_state(model, cfg, ema=ema.module.state_dict()), path)
    torch.testing.assert_close(load_model(path, ema=True)(x), ema.module(x), rtol=0, atol=0)
    assert load_model(path).class_names is None


def test_load_model_errors(tmp_path, tiny_registry):
    cfg = RunConfig()
    cfg.model.name = "tiny"
    path = tmp_path / "last.pt"
    save_checkpoint(_train_state(_tiny(), cfg), path)
    with pytest.raises(CheckpointError, match=r"has no EMA weights .*ema=False"):
        load_model(path, ema=True)
    assert load_model(path).visionzoo_weights == "model"  # no EMA entry: the raw weights

    save_checkpoint(_train_state(_tiny(3, 7), cfg), path)  # weights of another shape
    with pytest.raises(
        CheckpointError, match=r"(?s)weights do not match model 'tiny'.*size mismatch for 0\.weight"
    ):
        load_model(path)

    cfg.model.name = "gone"
    save_checkpoint(_train_state(_tiny(), cfg), path)
    with pytest.raises(CheckpointError, match=r"cannot rebuild model 'gone'.*unknown model"):
        load_model(path)

    save_checkpoint(make_state(model=_tiny().state_dict()), path)
    with pytest.raises(CheckpointError, match="has no model config"):
        load_model(path)


def test_load_model_with_a_registry_model(tmp_path):
    cfg = RunConfig()
    cfg.model.name = "mobilenet_v1"
    cfg.model.args = {"width_mult": 0.25}
    model = visionzoo.create_model("mobilenet_v1", width_mult=0.25, num_classes=6).eval()
    state = make_state(
        config=config_to_dict(cfg),
        model_kwargs={"num_classes": 6},
        model=model.state_dict(),
        class_names=[f"c{i}" for i in range(6)],
    )
    save_checkpoint(state, tmp_path / "best.pt")
    loaded = visionzoo.load(str(tmp_path / "best.pt"))
    assert type(loaded) is type(model) and not loaded.training
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded.class_names == [f"c{i}" for i in range(6)]
