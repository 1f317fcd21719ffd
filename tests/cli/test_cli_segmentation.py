"""`visionzoo train unet data=shapes task=segmentation`, then eval and predict, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from visionzoo.cli.main import main

TINY = [
    "data.image_size=32",
    "data.train_size=16",
    "data.val_size=8",
    "data.batch_size=8",
    "data.num_classes=3",
    "model.args.base_channels=4",
    "trainer.epochs=1",
    "trainer.progress=false",
    "trainer.tensorboard=false",
]


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    argv = ["train", "unet", "data=shapes", "task=segmentation", *TINY]
    assert main([*argv, f"trainer.output_dir={out}", "trainer.run_name=seg"]) == 0
    return out / "seg"


def test_train_picks_recipe_and_writes_per_class_summary(seg_run, capsys):
    cfg = (seg_run / "config.yaml").read_text()
    assert "name: unet" in cfg and "task: segmentation" in cfg
    summary = (seg_run / "summary.md").read_text()
    assert "val/mIoU" in summary and "| background |" in summary
    assert (seg_run / "plots" / "confusion_matrix.png").is_file()


def test_eval_writes_table_and_overlays(seg_run, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["eval", str(seg_run), "--out", str(out), "--samples", "2"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert 0.0 <= metrics["val/mIoU"] <= 1.0 and "val/mDice" in metrics
    assert "| class | IoU | Dice |" in captured.err
    assert (out / "per_class.md").read_text().count("\n| ") == 4  # header rule + 4 classes
    sample = Image.open(out / "val_0000.png")
    assert sample.size[0] > 3 * sample.size[1] - 20  # three panels side by side


def test_predict_writes_index_mask_and_overlay(seg_run, tmp_path, capsys):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 40, 3), np.uint8)).save(
        tmp_path / "a.png"
    )
    out = tmp_path / "pred"
    assert main(["predict", str(seg_run), str(tmp_path / "a.png"), "--out", str(out)]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["size"] == [40, 24] and "_mask" not in result
    mask = np.asarray(Image.open(result["mask"]))
    assert mask.shape == (24, 40) and mask.max() < 4
    counts = {c["index"]: c["fraction"] for c in result["classes"]}
    for i, f in counts.items():
        assert abs((mask == i).mean() - f) < 1e-6
    assert Image.open(result["rendered"]).size[0] >= 256


def test_unknown_segmentation_data_is_a_clear_error(capsys):
    assert main(["train", "unet", "data=imagefolder", "task=segmentation"]) == 2
    assert "not a segmentation data set" in capsys.readouterr().err
