"""``visionzoo bench detectors``: one table for R-CNN, Fast R-CNN and Faster R-CNN."""

from __future__ import annotations

import json

import pytest

from visionzoo.cli.main import main


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path / "cache"))


def test_bench_detectors_prints_and_writes_one_table(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(
        [
            "bench", "detectors", "data=shapes", "--train-size", "2", "--val-size", "2",
            "--epochs", "1", "--rcnn-iters", "1", "--image-size", "32", "--out", str(out),
            "model.args.proposal_mode=single",
        ]
    )  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    table = (out / "table.md").read_text()
    assert table.strip() in printed
    rows = [line for line in table.splitlines() if line.startswith("| ") and "_" in line]
    assert [r.split("(")[0].strip("| ").strip() for r in rows] == [
        "R-CNN", "Fast R-CNN", "Faster R-CNN",
    ]  # fmt: skip
    assert "213x" in table and "9x" in table and "~10 ms (RPN)" in table
    results = json.loads((out / "results.json").read_text())["rows"]
    assert [r["model"] for r in results] == [
        "rcnn_resnet18", "fast_rcnn_resnet18", "fasterrcnn_resnet18_c4",
    ]  # fmt: skip
    for r in results:
        assert r["train_s"] > 0 and r["test_s"] > 0 and r["proposal_s"] > 0
        assert 0.0 <= r["mAP50"] <= 1.0
    # The R-CNN row is the reference of the ratios.
    assert "| 1.0x | 1.0x |" in rows[0]
    # Proposals were cached once in the bench folder and reused by the detectors.
    assert any((out / "cache" / "proposals").rglob("*.npy"))


def test_bench_refuses_unknown_models_and_other_data(tmp_path, capsys):
    assert main(["bench", "detectors", "--models", "yolo", "--out", str(tmp_path)]) == 2
    assert "yolo" in capsys.readouterr().err
    assert main(["bench", "detectors", "data=coco", "--out", str(tmp_path)]) == 2
    assert "shapes" in capsys.readouterr().err
