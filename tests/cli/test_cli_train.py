"""train / eval / predict from the command line (in-process, through the real parser)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from visionzoo.cli.main import main

TINY = [
    "data.image_size=32",
    "data.train_size=64",
    "data.val_size=32",
    "data.batch_size=16",
    "trainer.epochs=1",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "trainer.plots=false",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert (
        main(["train", "resnet18", *TINY, f"trainer.output_dir={out}", "trainer.run_name=cli"]) == 0
    )
    return out / "cli"


def test_train_writes_run(trained_run, capsys):
    assert (trained_run / "checkpoints" / "best.pt").is_file()
    assert "model:\n  name: resnet18" in (trained_run / "config.yaml").read_text()


def test_eval_prints_metrics(trained_run, capsys):
    assert main(["eval", str(trained_run), "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0.0 <= out["val/acc1"] <= 1.0 and "val/acc5" in out


def test_predict_json_and_png(trained_run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name, mode in (("rgb.png", "RGB"), ("grey.png", "L")):
        arr = rng.integers(0, 255, (40, 50, 3) if mode == "RGB" else (40, 50), dtype=np.uint8)
        Image.fromarray(arr, mode).save(tmp_path / name)
    out_dir = tmp_path / "pred"
    assert (
        main(["predict", str(trained_run), str(tmp_path), "--topk", "3", "--out", str(out_dir)])
        == 0
    )
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 2
    for r in results:
        probs = [t["prob"] for t in r["topk"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)
        assert Image.open(r["rendered"]).size[0] >= 50


def test_predict_corrupt_image_names_file(trained_run, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    assert main(["predict", str(trained_run), str(bad), "--no-render"]) == 2
    assert "broken.png" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "resnett18"], "did you mean resnet18"),
        (["train", "resnet18", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
        (["train", "resnet18", "data=shapez"], "data.name"),
        (["train", "--config", "nope"], "unknown recipe 'nope'"),
        (["eval", "/nonexistent/run"], "does not exist"),
    ],
)
def test_user_errors_exit_2(argv, message, capsys, tmp_path):
    assert main([*argv, f"trainer.output_dir={tmp_path}"] if argv[0] == "train" else argv) == 2
    assert message in capsys.readouterr().err
