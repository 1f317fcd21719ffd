"""Run plots: real PNG files, tolerant of the gaps metrics.jsonl rows have."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from visionzoo.analysis.plots import plot_confusion_matrix, plot_curves


def _rows(epochs: int = 3, steps_per_epoch: int = 40) -> list[dict]:
    """Rows shaped like the trainer's: per-step train rows, one val row per epoch."""
    rows = []
    step = 0
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            step += 1
            rows.append(
                {
                    "step": step,
                    "epoch": epoch,
                    "train/loss": 2.3 * math.exp(-step / 60) + 0.05 * math.sin(step),
                    "train/lr": 0.1 * (1 - step / (epochs * steps_per_epoch)),
                }
            )
        rows.append(
            {
                "step": step,
                "epoch": epoch,
                "val/loss": 2.0 - 0.5 * epoch,
                "val/acc1": 0.3 + 0.2 * epoch,
                "val/acc5": 0.7 + 0.1 * epoch,
            }
        )
    return rows


def _assert_png(path, min_size=(200, 150)):
    assert path.is_file()
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()  # decodes the whole file: a truncated PNG fails here
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        # Something was drawn: not a single flat colour.
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 50


def test_plot_curves_writes_loss_accuracy_and_lr(tmp_path):
    paths = plot_curves(_rows(), tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["accuracy.png", "loss.png", "lr.png"]
    for p in paths:
        assert p.parent == tmp_path / "plots"
        _assert_png(p)


def test_plot_curves_copes_with_missing_keys_and_bad_values(tmp_path):
    rows = [
        {"step": 1, "train/loss": 2.0},
        {"epoch": 0, "val/acc1": 0.5},  # no step: the accuracy plot falls back to epochs
        {"step": 2},  # nothing to plot
        {"step": 3, "train/loss": None, "val/loss": float("nan")},  # logger writes None for NaN
        {"step": 4, "train/loss": 1.5, "train/loss_aux1": 1.9, "val/loss": 1.7},
        {"epoch": 1, "val/acc1": 0.6, "val/acc5": "n/a"},
        "not a row",
    ]
    paths = plot_curves(rows, tmp_path)
    assert sorted(p.name for p in paths) == ["accuracy.png", "loss.png"]  # no lr data
    for p in paths:
        _assert_png(p)
    # Nothing plottable at all: no files, no error.
    assert plot_curves([], tmp_path / "empty") == []
    assert plot_curves([{"step": 1}, {"epoch": 2, "train/loss": None}], tmp_path / "e2") == []
    assert not (tmp_path / "empty").exists()


@pytest.mark.parametrize("as_tensor", [True, False])
def test_plot_confusion_matrix(tmp_path, as_tensor):
    cm = np.array([[5, 1, 0], [0, 0, 0], [2, 3, 40]])  # an empty row must not divide by zero
    path = plot_confusion_matrix(
        torch.from_numpy(cm) if as_tensor else cm,
        ["circle", "square", "triangle"],
        tmp_path / "cm.png",
    )
    assert path == tmp_path / "cm.png"
    _assert_png(path)


def test_plot_confusion_matrix_many_classes_and_missing_names(tmp_path):
    rng = np.random.default_rng(0)
    cm = rng.integers(0, 20, size=(60, 60)) + np.diag(rng.integers(50, 100, size=60))
    path = plot_confusion_matrix(cm, None, tmp_path / "sub" / "cm60.png")
    _assert_png(path)
    with pytest.raises(ValueError, match=r"square"):
        plot_confusion_matrix(np.zeros((2, 3)), None, tmp_path / "bad.png")
