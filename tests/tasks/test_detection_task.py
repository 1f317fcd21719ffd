"""DetectionTask with a tiny torchvision Faster R-CNN (weights=None) and fake models: losses,
evaluation (perfect and empty), prediction and rendering, and their errors."""

from __future__ import annotations

import hashlib
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from visionzoo.engine.config import RunConfig
from visionzoo.errors import ConfigError, DataError, TrainingError
from visionzoo.tasks import get_task
from visionzoo.tasks.base import Task
from visionzoo.tasks.detection import EVAL_KEYS, DetectionTask

K = 3  # object classes


def _cfg() -> RunConfig:
    cfg = RunConfig(task="detection")
    cfg.data.image_size = 48
    cfg.data.train_size = 8
    cfg.data.val_size = 6
    cfg.data.num_classes = K
    cfg.data.batch_size = 4
    return cfg


@pytest.fixture(scope="module")
def task_and_bundle():
    task = DetectionTask(_cfg())
    return task, task.build_data()


def tiny_faster_rcnn(num_classes: int = K + 1) -> FasterRCNN:
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
    )
    backbone.out_channels = 16
    return FasterRCNN(
        backbone,
        num_classes=num_classes,
        rpn_anchor_generator=AnchorGenerator(
            sizes=((8, 16, 32),), aspect_ratios=((0.5, 1.0, 2.0),)
        ),
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        min_size=48,
        max_size=48,
    )


def _key(image: torch.Tensor) -> str:
    """The same key for a uint8 image and its float 0-1 copy."""
    x = image if image.dtype == torch.uint8 else (image * 255).round().to(torch.uint8)
    return hashlib.sha1(x.cpu().contiguous().numpy().tobytes()).hexdigest()


class AnswerModel(nn.Module):
    """Returns stored detections for images it has seen (keyed by pixels); records its inputs."""

    def __init__(self, answers: dict[str, dict[str, torch.Tensor]]):
        super().__init__()
        self.answers = answers
        self.weight = nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[list[torch.Tensor], object]] = []

    def forward(self, images, targets=None):
        self.seen.append((images, targets))
        if self.training:
            return {"loss_a": self.weight + 1.0, "loss_b": self.weight * 0 + 2.0}
        empty = {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "scores": torch.zeros(0),
        }
        return [self.answers.get(_key(im), empty) for im in images]


def _truth_model(dataset) -> AnswerModel:
    answers = {}
    for i in range(len(dataset)):
        image, t = dataset[i]
        answers[_key(image)] = {
            "boxes": t["boxes"],
            "labels": t["labels"],
            "scores": torch.linspace(1.0, 0.9, len(t["labels"])),
        }
    return AnswerModel(answers)


def _loader(dataset, bundle, batch_size=4):
    return DataLoader(dataset, batch_size=batch_size, collate_fn=bundle.collate_fn)


def test_registered_and_protocol(task_and_bundle):
    task, bundle = task_and_bundle
    assert isinstance(get_task(_cfg()), DetectionTask) and isinstance(task, Task)
    assert task.name == "detection" and task.monitor == "val/mAP50" and task.monitor_mode == "max"
    assert task.model_kwargs(bundle) == {"num_classes": K + 1}  # + background


def test_training_step_with_real_faster_rcnn_and_an_empty_image(task_and_bundle):
    task, bundle = task_and_bundle
    model = tiny_faster_rcnn().train()
    images, targets = bundle.collate_fn([bundle.train[0], bundle.train[1]])
    # Second image: no objects at all.
    targets[1] = {k: v[:0] if v.dim() else v for k, v in targets[1].items()}
    out = task.training_step(model, (images, targets))
    parts = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert set(out) == {"loss"} | parts
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    torch.testing.assert_close(out["loss"].detach(), sum(out[k] for k in parts))
    out["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # Only empty images in the batch: still finite.
    empty = [{k: v[:0] if v.dim() else v for k, v in t.items()} for t in targets]
    assert torch.isfinite(task.training_step(model, (images, empty))["loss"])


def test_training_step_feeds_float_images_and_drops_ignored_boxes(task_and_bundle):
    task, _ = task_and_bundle
    model = AnswerModel({}).train()
    image = torch.full((3, 8, 8), 255, dtype=torch.uint8)
    target = {
        "boxes": torch.tensor([[0.0, 0, 4, 4], [1, 1, 5, 5]]),
        "labels": torch.tensor([1, 2]),
        "ignore": torch.tensor([False, True]),
        "iscrowd": torch.tensor([False, True]),
    }
    out = task.training_step(model, ([image], [target]))
    assert out["loss"].item() == 3.0 and out["loss_a"].item() == 1.0
    (seen_images, seen_targets) = model.seen[-1]
    assert seen_images[0].dtype == torch.float32 and seen_images[0].max() == 1.0  # /255 only
    # The model trains on the non-ignored box only, and sees only boxes and labels.
    assert set(seen_targets[0]) == {"boxes", "labels"}
    assert seen_targets[0]["labels"].tolist() == [1]
    assert seen_targets[0]["boxes"].tolist() == [[0, 0, 4, 4]]


def test_training_step_errors(task_and_bundle):
    task, _ = task_and_bundle
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    bad = {"boxes": torch.tensor([[0.0, 0, 4, 4]]), "labels": torch.tensor([K + 1])}
    with pytest.raises(DataError, match=r"target label 4 is out of range for 3 object classes"):
        task.training_step(AnswerModel({}).train(), ([image], [bad]))

    class NoDict(nn.Module):
        def forward(self, images, targets=None):
            return torch.zeros(())

    ok = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    with pytest.raises(TrainingError, match="must return a non-empty dict of losses"):
        task.training_step(NoDict().train(), ([image], [ok]))


def test_evaluate_perfect_model_scores_one(task_and_bundle):
    task, bundle = task_and_bundle
    model = _truth_model(bundle.val).eval()
    out = task.evaluate(model, _loader(bundle.val, bundle))
    assert set(out) == {f"val/{k}" for k in EVAL_KEYS}
    for k in ("val/mAP", "val/mAP50", "val/mAP75", "val/voc_AP50", "val/voc07_AP50"):
        assert out[k] == pytest.approx(1.0), k
    assert math.isnan(out["val/mAP_large"])  # no object above 96^2 px in a 48 px image
    assert all(isinstance(v, float) for v in out.values())
    report = task.report()
    assert report.startswith("| class | boxes (ground truth) |")
    assert all(f"| {name} |" in report for name in bundle.class_names)
    assert task.last_eval["count"] == len(bundle.val)
    assert "Average Precision" in task.last_eval["summary"]
    assert not model.training  # evaluate restores the mode it found


def test_evaluate_model_without_detections_scores_zero(task_and_bundle):
    task, bundle = task_and_bundle
    model = AnswerModel({}).train()
    out = task.evaluate(model, _loader(bundle.val, bundle))
    assert out["val/mAP50"] == 0.0 and out["val/voc_AP50"] == 0.0
    assert model.training


def test_evaluate_real_model_runs(task_and_bundle):
    task, bundle = task_and_bundle
    out = task.evaluate(tiny_faster_rcnn().eval(), _loader(bundle.val, bundle, batch_size=3))
    assert 0.0 <= out["val/mAP50"] <= 1.0 and 0.0 <= out["val/voc_AP50"] <= 1.0


def test_evaluate_errors(task_and_bundle):
    task, bundle = task_and_bundle
    model = AnswerModel({})
    model.num_classes = 7
    with pytest.raises(ConfigError, match=r"num_classes=7 .* has 3 object classes"):
        task.evaluate(model, _loader(bundle.val, bundle))
    with pytest.raises(DataError, match="validation set .* is empty"):
        task.evaluate(AnswerModel({}), [])


def test_predict_threshold_names_and_json(task_and_bundle):
    task, bundle = task_and_bundle
    image, t = bundle.val[0]
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    n = len(t["labels"])
    scores = torch.linspace(0.9, 0.2, n + 1)[:n].flip(0)  # lowest first: predict sorts
    model = AnswerModel(
        {_key(image): {"boxes": t["boxes"], "labels": t["labels"], "scores": scores}}
    )
    (pred,) = task.predict(model, [pil], topk=5)
    keep = scores >= 0.5
    assert pred["scores"] == sorted(pred["scores"], reverse=True)
    assert len(pred["boxes"]) == int(keep.sum()) == len(pred["labels"]) == len(pred["label_ids"])
    assert all(s >= 0.5 for s in pred["scores"])
    assert all(name in bundle.class_names for name in pred["labels"])
    json.dumps(pred)  # JSON-serialisable
    (everything,) = task.predict(model, [pil], score_threshold=0.0)
    assert len(everything["boxes"]) == n
    order = torch.argsort(scores, descending=True)
    assert everything["boxes"] == [[round(v, 2) for v in b] for b in t["boxes"][order].tolist()]
    assert task.predict(model, []) == []
    with pytest.raises(ConfigError, match="score_threshold must be in"):
        task.predict(model, [pil], score_threshold=1.5)


def test_render_draws_boxes_into_a_png(task_and_bundle):
    task, _ = task_and_bundle
    image = Image.new("RGB", (64, 48), (0, 0, 0))
    pred = {
        "boxes": [[4.0, 4.0, 30.0, 30.0], [10.0, 20.0, 60.0, 44.0]],
        "labels": ["circle", "square"],
        "label_ids": [1, 2],
        "scores": [0.93, 0.51],
    }
    out = task.render(image, pred)
    assert out.size == (64 * 6, 48 * 6)  # small images are scaled up to a 256 px short side
    assert np.asarray(out).any()  # boxes and labels drawn on black
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    assert buf.tell() > 0
    blank = task.render(image, {"boxes": [], "labels": [], "scores": []})
    assert blank.size == out.size and not np.asarray(blank).any()


def test_write_samples(task_and_bundle, tmp_path):
    task, bundle = task_and_bundle
    paths = task.write_samples(_truth_model(bundle.val), bundle.val, tmp_path, 2)
    assert len(paths) == 2
    for p in paths:
        with Image.open(p) as im:
            assert im.width > im.height  # ground truth | prediction side by side
