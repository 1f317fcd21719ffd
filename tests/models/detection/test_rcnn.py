"""R-CNN (arXiv:1311.2524): warp with context, SVM hard-negative mining, bbox-regression
targets, feature cache, the staged fit and the engine path."""

from __future__ import annotations

import pytest
import torch

import visionzoo as vz
from visionzoo.errors import ModelArgumentError
from visionzoo.models.detection.rcnn import (
    RCNN,
    STAGES,
    context_boxes,
    fit_ridge,
    mine_hard_negatives,
    rcnn_apply_deltas,
    rcnn_box_targets,
    train_linear_svm,
    warp_regions,
    weights_digest,
)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path / "cache"))


def _small(**kw) -> RCNN:
    kw = {"num_classes": 3, "warp_size": 16, "proposal_mode": "single", **kw}
    return vz.create_model("rcnn_resnet18", **kw)


class _Toy(torch.utils.data.Dataset):
    """Four 32 px images with one bright square (class 1) or bar (class 2) each."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        img = torch.full((3, 32, 32), 20, dtype=torch.uint8)
        if i % 2 == 0:
            img[:, 6:18, 8:20] = 230
            box, label = [8.0, 6.0, 20.0, 18.0], 1
        else:
            img[:, 20:26, 4:28] = 120
            box, label = [4.0, 20.0, 28.0, 26.0], 2
        return img, {"boxes": torch.tensor([box]), "labels": torch.tensor([label])}


# ------------------------------------------------------------------------------ boxes


def test_bbox_regression_targets_match_the_paper_and_invert_exactly():
    p = torch.tensor([[10.0, 20.0, 30.0, 60.0]], dtype=torch.float64)  # centre 20, 40; 20 x 40
    g = torch.tensor([[12.0, 18.0, 36.0, 58.0]], dtype=torch.float64)  # centre 24, 38; 24 x 40
    t = rcnn_box_targets(p, g)
    expected = [(24 - 20) / 20, (38 - 40) / 40, torch.log(torch.tensor(24 / 20)).item(), 0.0]
    torch.testing.assert_close(t[0], torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(rcnn_apply_deltas(p, t), g, rtol=0, atol=1e-12)
    # Random boxes: targets -> boxes is the identity.
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=gen, dtype=torch.float64) * 100
    wh = torch.rand(50, 2, generator=gen, dtype=torch.float64) * 50 + 1
    props = torch.cat([xy, xy + wh], 1)
    gts = props + torch.randn(50, 4, generator=gen, dtype=torch.float64)
    gts[:, 2:] = torch.maximum(gts[:, 2:], gts[:, :2] + 0.5)
    torch.testing.assert_close(rcnn_apply_deltas(props, rcnn_box_targets(props, gts)), gts,
                               rtol=0, atol=1e-10)  # fmt: skip


def test_context_padding_puts_the_box_in_the_inner_warp():
    boxes = torch.tensor([[10.0, 10.0, 30.0, 20.0]])
    ctx = context_boxes(boxes, warp_size=227, padding=16)
    # 16 warped pixels on each side of 195: the box grows by 16/195 of its size per side.
    torch.testing.assert_close(
        ctx, torch.tensor([[10 - 20 * 16 / 195, 10 - 10 * 16 / 195, 30 + 20 * 16 / 195,
                            20 + 10 * 16 / 195]])
    )  # fmt: skip
    # Warping an image that is 1 inside the box and 0 outside: the box fills the inner region.
    image = torch.zeros(1, 40, 40)
    image[:, 10:20, 10:30] = 1.0
    crop = warp_regions(image.expand(3, -1, -1), boxes, warp_size=24, padding=4)[0, 0]
    assert crop.shape == (24, 24)
    assert torch.all(crop[5:19, 5:19] > 0.99)  # inside (away from the bilinear edge)
    assert torch.all(crop[:3] < 0.01) and torch.all(crop[:, 21:] < 0.01)  # the context


def test_regions_outside_the_image_read_the_mean():
    image = torch.ones(3, 10, 10)
    crop = warp_regions(image, torch.tensor([[-20.0, -20.0, -10.0, -10.0]]), 8, 0.0)
    assert torch.all(crop == 0)


# ------------------------------------------------------------------------------ SVM


def test_hard_negative_mining_picks_the_highest_scoring_negatives():
    scores = torch.tensor([-3.0, 0.5, -0.9, 2.0, -1.5, 1.0, -0.2, 3.0])
    in_cache = torch.tensor([False, False, False, False, False, False, False, True])
    picked = mine_hard_negatives(scores, in_cache, max_new=3)
    # 3.0 is already cached; of the rest, the three highest (all > -1) in order.
    assert picked.tolist() == [3, 5, 1]
    # Without a cap: every margin violator (score > -1), highest first; easy ones never.
    assert mine_hard_negatives(scores, in_cache).tolist() == [3, 5, 1, 6, 2]
    assert (
        mine_hard_negatives(torch.tensor([-2.0, -1.1]), torch.zeros(2, dtype=torch.bool)).numel()
        == 0
    )


def test_linear_svm_separates_and_ridge_recovers_a_linear_map():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=gen)
    y = torch.where(x[:, 0] + 0.5 * x[:, 1] > 0, 1, -1)
    w, b = train_linear_svm(x * 5, y, c=1.0)
    acc = ((x * 5 @ w + b > 0).long() * 2 - 1 == y).float().mean()
    assert acc > 0.95
    true_w = torch.randn(4, 5, generator=gen)
    t = x @ true_w.T + torch.tensor([1.0, -2.0, 0.5, 0.0])
    wr, br = fit_ridge(x, t, lam=1e-6)
    torch.testing.assert_close(wr, true_w, atol=1e-4, rtol=0)
    torch.testing.assert_close(br, torch.tensor([1.0, -2.0, 0.5, 0.0]), atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------ feature cache


def test_feature_cache_is_reused_and_invalidated_when_the_cnn_changes():
    model = _small()
    image = _Toy()[0][0]
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [8.0, 6.0, 20.0, 18.0]])
    f1 = model.cached_features(image, boxes)
    assert model.feature_cache.stats == {"hits": 0, "misses": 1}
    f2 = model.cached_features(image, boxes)
    assert model.feature_cache.stats == {"hits": 1, "misses": 1}
    torch.testing.assert_close(f1, f2)
    d0 = weights_digest(model.cnn)
    with torch.no_grad():
        model.cnn.conv1.weight.mul_(2.0)  # "more fine-tuning"
    assert weights_digest(model.cnn) != d0
    f3 = model.cached_features(image, boxes)
    assert model.feature_cache.stats == {"hits": 1, "misses": 2}
    torch.testing.assert_close(f3, model.region_features(image, boxes))
    # Other warp settings are other entries too.
    other = _small(warp_size=20)
    other.load_state_dict(model.state_dict())
    other.cached_features(image, boxes)
    assert other.feature_cache.stats["misses"] == 1


# ------------------------------------------------------------------------------ model


def test_training_forward_points_at_fit_and_errors_name_the_argument():
    model = _small().train()
    img = torch.rand(3, 32, 32)
    target = {"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([1])}
    with pytest.raises(ModelArgumentError, match=r"model\.fit"):
        model([img], [target])
    with pytest.raises(ModelArgumentError, match="context_padding"):
        _small(context_padding=8)
    with pytest.raises(ModelArgumentError, match="proposal_mode"):
        _small(proposal_mode="fastest")
    with pytest.raises(ModelArgumentError, match=r"num_classes .* must be an integer >= 2, got 1"):
        _small(num_classes=1)
    with pytest.raises(ModelArgumentError, match=r"nms_thresh must be a number in \[0, 1\], got 2"):
        _small(nms_thresh=2)


def test_fit_runs_the_four_named_stages_and_the_weights_live_in_the_state_dict():
    torch.manual_seed(0)
    model = _small()
    lines: list[str] = []
    toy = _Toy()
    calls = []
    toy.__class__ = type("Counting", (_Toy,), {
        "__getitem__": lambda self, i: (calls.append(i), _Toy.__getitem__(self, i))[1]})  # fmt: skip
    report = model.fit(toy, finetune_iters=3, finetune_batch=16, progress=lines.append)
    # One read per sample: a random flip must apply to the image and its boxes together.
    assert sorted(calls) == [0, 1, 2, 3]
    assert [s for s in lines if s.startswith("stage")] == list(STAGES)
    assert set(report) == {"proposals", "finetune", "svm", "bbox_regression"}
    # Images 0 and 2 (1 and 3) are the same pixels and regions: their features are reused.
    assert report["svm"]["feature_cache_misses"] == 2
    assert report["svm"]["feature_cache_hits"] == 2
    assert bool(model.fitted)
    assert model.svm_weight.abs().sum() > 0 and float(model.feature_scale) != 1.0
    for key in ("svm_weight", "svm_bias", "bbox_weight", "bbox_bias", "feature_scale", "fitted"):
        assert key in model.state_dict()
    model.eval()
    images = [_Toy()[i][0].float() / 255 for i in range(2)]
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det in out:
        assert det["boxes"].shape[1] == 4 and det["labels"].dtype == torch.int64
        assert torch.all((det["scores"] > 0) & (det["scores"] < 1))
        assert torch.all(det["boxes"][:, 2:] <= 32) and torch.all(det["boxes"] >= 0)
        assert set(det["labels"].tolist()) <= {1, 2}
    # A fresh model with the state dict gives the same detections.
    clone = _small().eval()
    clone.load_state_dict(model.state_dict())
    with torch.no_grad():
        again = clone(images)
    for a, b in zip(out, again, strict=True):
        torch.testing.assert_close(a["scores"], b["scores"])
    # Fitting again reuses nothing of the CNN features (the CNN changed), but all proposals.
    report2 = model.fit(_Toy(), finetune_iters=1, finetune_batch=16, progress=False)
    assert report2["proposals"]["computed"] == 0
    assert report2["svm"]["feature_cache_misses"] == 2


def test_trainer_delegates_to_multi_stage_fit_and_checkpoints_load(tmp_path):
    from visionzoo.cli.main import main

    rc = main(
        [
            "train", "rcnn_resnet18", "data=shapes", "task=detection", "data.image_size=32",
            "data.train_size=4", "data.val_size=2", "trainer.max_steps=2",
            f"trainer.output_dir={tmp_path}", "trainer.run_name=r", "trainer.progress=false",
            "trainer.plots=false", "trainer.tensorboard=false", "model.args.warp_size=16",
            "model.args.proposal_mode=single",
        ]
    )  # fmt: skip
    assert rc == 0
    run = tmp_path / "r"
    assert (run / "rcnn_stages.json").is_file()
    assert "val/mAP50" in (run / "metrics.jsonl").read_text()
    model = vz.load(run / "checkpoints" / "best.pt")
    assert isinstance(model, RCNN) and bool(model.fitted)
