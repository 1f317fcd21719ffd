"""Fast R-CNN (arXiv:1504.08083): the RoI sampler's ratios and thresholds, projection of the
proposals, the multi-task loss, the model convention and the engine path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import visionzoo as vz
from visionzoo.errors import ModelArgumentError
from visionzoo.models.detection import FasterRCNN
from visionzoo.models.detection.fast_rcnn import FastRCNN, fast_rcnn_loss
from visionzoo.ops import box_iou


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONZOO_CACHE", str(tmp_path / "cache"))


def _model(**kw) -> FastRCNN:
    kw = {"num_classes": 3, "proposal_mode": "single", "min_size": 64, **kw}
    return vz.create_model("fast_rcnn_resnet18", **kw)


def _image_and_target() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    img = torch.full((3, 48, 48), 0.1)
    img[:, 8:24, 10:30] = 0.9
    img[:, 30:44, 30:40] = 0.5
    target = {
        "boxes": torch.tensor([[10.0, 8.0, 30.0, 24.0], [30.0, 30.0, 40.0, 44.0]]),
        "labels": torch.tensor([1, 2]),
    }
    return img, target


def test_roi_sampler_keeps_25_percent_foreground_and_the_iou_thresholds():
    model = _model()
    gt = torch.tensor([[100.0, 100.0, 200.0, 200.0]])
    gen = torch.Generator().manual_seed(0)
    # Proposals at every overlap with the box: shifted copies of it.
    shifts = torch.linspace(0, 150, 400)
    props = gt.repeat(400, 1) + torch.stack([shifts, shifts * 0.3, shifts, shifts * 0.3], 1)
    props = props[torch.randperm(400, generator=gen)]
    iou = box_iou(props, gt)[:, 0]
    assert (iou >= 0.5).sum() > 16 and ((iou >= 0.1) & (iou < 0.5)).sum() > 48
    assert (iou < 0.1).sum() > 0
    target = [{"boxes": gt, "labels": torch.tensor([2])}]
    rois, labels, reg = model.roi_heads.select_training_samples([props], target)
    rois = rois[0]
    assert rois.shape[0] == 64 == labels.shape[0]  # 64 RoIs per image
    assert int((labels > 0).sum()) == 16  # 25 % foreground
    roi_iou = box_iou(rois, gt)[:, 0]
    assert torch.all(roi_iou[labels > 0] >= 0.5) and torch.all(labels[labels > 0] == 2)
    bg = roi_iou[labels == 0]
    assert torch.all((bg >= 0.1) & (bg < 0.5))  # the paper's [0.1, 0.5)
    # bg_iou_thresh_lo=0 (the switch) lets IoU < 0.1 RoIs be background too.
    low = _model(bg_iou_thresh_lo=0.0)
    torch.manual_seed(0)
    counts = 0
    for _ in range(5):
        r, lab, _ = low.roi_heads.select_training_samples([props], target)
        counts += int((box_iou(r[0], gt)[:, 0][lab == 0] < 0.1).sum())
    assert counts > 0
    # Few positives: all of them, the rest background.
    few = props[iou < 0.5]
    _, lab, _ = model.roi_heads.select_training_samples([few], target)
    assert int((lab > 0).sum()) == 1 and lab.numel() == 64  # only the added ground truth


def test_multi_task_loss_is_cross_entropy_plus_smooth_l1_on_foreground():
    logits = torch.randn(4, 3)
    deltas = torch.randn(4, 12)
    labels = torch.tensor([0, 2, 1, 0])
    targets = torch.randn(4, 4)
    cls, box = fast_rcnn_loss(logits, deltas, labels, targets, beta=1.0)
    torch.testing.assert_close(cls, F.cross_entropy(logits, labels))
    d = deltas.view(4, 3, 4)
    fg = torch.stack([d[1, 2], d[2, 1]])
    expected = F.smooth_l1_loss(fg, targets[[1, 2]], beta=1.0, reduction="sum") / 4
    torch.testing.assert_close(box, expected)


def test_training_and_eval_follow_the_detection_convention():
    model = _model()
    img, target = _image_and_target()
    model.train()
    b = target["boxes"]
    flipped = {"boxes": torch.stack([48 - b[:, 2], b[:, 1], 48 - b[:, 0], b[:, 3]], 1),
               "labels": target["labels"]}  # fmt: skip
    losses = model([img, img.flip(-1)], [target, flipped])
    assert set(losses) == {"loss_classifier", "loss_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad is not None
    assert model.backbone.body.conv1.weight.grad is not None  # one backbone pass, trained
    model.eval()
    with torch.no_grad():
        out = model([img, torch.rand(3, 40, 56)])
    assert len(out) == 2
    for det, (h, w) in zip(out, [(48, 48), (40, 56)], strict=True):
        assert det["boxes"].shape[1] == 4 and det["boxes"].shape[0] <= 100
        assert torch.all(det["boxes"][:, 2] <= w + 1e-3) and torch.all(
            det["boxes"][:, 3] <= h + 1e-3
        )
        assert torch.all((det["labels"] >= 1) & (det["labels"] <= 2))


def test_proposals_are_computed_once_and_projected_onto_the_resized_image():
    model = _model(min_size=96).eval()
    img, _ = _image_and_target()
    seen = []
    model.roi_heads.box_roi_pool.register_forward_pre_hook(
        lambda mod, args: seen.append(args[1][0].clone())
    )
    with torch.no_grad():
        model([img])
        model([img])
    props = model.proposal_cache(img)
    torch.testing.assert_close(seen[0], props * 2.0)  # 48 -> 96 px
    assert model.proposal_cache.stats["misses"] == 1  # the second pass read the cache


def test_bad_arguments_name_themselves():
    with pytest.raises(ModelArgumentError, match="roi_op"):
        _model(roi_op="warp")
    with pytest.raises(ModelArgumentError, match="bg_iou_thresh_lo"):
        _model(bg_iou_thresh_lo=0.6)
    with pytest.raises(ModelArgumentError, match=r"num_classes .* must be an integer >= 2"):
        _model(num_classes=True)
    with pytest.raises(ModelArgumentError, match="anchor_sizes must give 1 level"):
        vz.create_model("fasterrcnn_resnet18_c4", num_classes=3, anchor_sizes=((16,), (32,)))
    with pytest.raises(ModelArgumentError, match=r"positive_fraction must be a number in \(0, 1\]"):
        _model(positive_fraction=0)
    with pytest.raises(ModelArgumentError, match="targets"):
        _model().train()([torch.rand(3, 32, 32)])
    with pytest.raises(ModelArgumentError, match="labels"):
        _model().train()(
            [torch.rand(3, 32, 32)],
            [{"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([5])}],
        )
    with pytest.raises(ModelArgumentError, match="degenerate"):
        _model().train()(
            [torch.rand(3, 32, 32)],
            [{"boxes": torch.tensor([[9.0, 1, 1, 9]]), "labels": torch.tensor([1])}],
        )


def test_roi_align_switch_and_the_benchmark_faster_rcnn_share_the_trunk():
    m = _model(roi_op="align")
    assert m.roi_heads.box_roi_pool.op == "align"
    faster = vz.create_model("fasterrcnn_resnet18_c4", num_classes=3, min_size=64)
    assert isinstance(faster, FasterRCNN)
    fast_keys = {k for k in _model().state_dict() if k.startswith("backbone.")}
    faster_keys = {k for k in faster.state_dict() if k.startswith("backbone.")}
    assert fast_keys == faster_keys
    img, target = _image_and_target()
    losses = faster.train()([img], [target])
    assert torch.isfinite(sum(losses.values()))


def test_visionzoo_train_fast_rcnn_on_shapes(tmp_path):
    from visionzoo.cli.main import main

    rc = main(
        [
            "train", "fast_rcnn_resnet18", "data=shapes", "task=detection",
            "data.image_size=32", "data.train_size=4", "data.val_size=2", "trainer.max_steps=2",
            f"trainer.output_dir={tmp_path}", "trainer.run_name=f", "trainer.progress=false",
            "trainer.plots=false", "trainer.tensorboard=false", "model.args.min_size=32",
            "model.args.proposal_mode=single",
        ]
    )  # fmt: skip
    assert rc == 0
    run = tmp_path / "f"
    assert "val/mAP50" in (run / "metrics.jsonl").read_text()
    model = vz.load(run / "checkpoints" / "last.pt")
    assert isinstance(model, FastRCNN)
