"""Object detection: the losses, evaluation, prediction and picture the trainer asks for.

Models follow torchvision's detection convention (DESIGN.md §3): ``model(images, targets)``
with ``images`` a list of float ``Tensor[3, H, W]`` in 0-1 (the model normalises and resizes
inside itself) and ``targets`` a list of ``{"boxes": Tensor[K, 4] xyxy, "labels": Tensor[K]}``;
in training mode it returns a dict of named losses, in eval mode
``[{"boxes", "labels", "scores"}]`` per image, boxes in the input's pixels. Label 0 is the
background, so a model for C object classes has ``num_classes = C + 1``.

Batches are ``(list[uint8 Tensor[3, H, W]], list[target])`` (:mod:`visionzoo.data.detection`).
Here the images only become float 0-1 (``/ 255``): the mean/std normalisation is the model's.

- ``training_step``: ``ignore`` boxes (COCO crowds, VOC difficult) are removed from the targets
  the model trains on (torchvision's COCO recipe does the same for crowds); the loss is the sum
  of the model's named losses (Faster R-CNN, arXiv:1506.01497 eq. 1 with lambda = 1: RPN
  objectness + RPN box regression + RoI classification + RoI box regression), each also
  returned, detached, for the log.
- ``evaluate``: COCO mAP (pycocotools) and VOC AP (:mod:`visionzoo.metrics.detection`);
  ``last_eval`` keeps the per-class rows and a printable per-class table (``visionzoo eval``
  prints it).
- ``predict``: detections scoring at least ``score_threshold`` (0.5), best first, with class
  names; ``render`` draws them with ``torchvision.utils.draw_bounding_boxes``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import draw_bounding_boxes

from ..data.bundle import DataBundle
from ..engine.config import RunConfig
from ..errors import ConfigError, DataError, TrainingError
from ..metrics.detection import DetectionMetrics
from .base import model_device, unwrap

__all__ = ["DetectionTask", "EVAL_KEYS"]

# The metrics evaluate() reports (as "val/<key>"); per-class APs go to last_eval.
EVAL_KEYS = (
    "mAP",
    "mAP50",
    "mAP75",
    "mAP_small",
    "mAP_medium",
    "mAP_large",
    "AR100",
    "voc_AP50",
    "voc07_AP50",
)
# render(): small inputs (64 px shapes) are blown up to at least this short side.
_RENDER_MIN_SIDE = 256
# Box colours by class, bright enough for black label text.
_PALETTE = (
    (255, 99, 71),
    (60, 179, 113),
    (30, 144, 255),
    (255, 215, 0),
    (238, 130, 238),
    (0, 206, 209),
    (255, 140, 0),
    (173, 255, 47),
    (255, 105, 180),
    (135, 206, 250),
)


def _to_float(images: Sequence[Tensor]) -> list[Tensor]:
    """uint8 images -> float 0-1 (other dtypes are taken to be 0-1 floats already)."""
    return [im.float().div_(255) if im.dtype == torch.uint8 else im.float() for im in images]


def _check_target_labels(targets: Sequence[Mapping[str, Tensor]], num_classes: int) -> None:
    """DataError unless every label is in 1..C. Checked before the forward pass: on CUDA an
    out-of-range label is a device-side assert that kills the process without naming it."""
    labels = [t["labels"].reshape(-1) for t in targets if t["labels"].numel()]
    if not labels:
        return
    lo, hi = torch.aminmax(torch.cat([x.to(labels[0].device) for x in labels]))
    lo, hi = int(lo), int(hi)
    if lo < 1 or hi > num_classes:
        bad = lo if lo < 1 else hi
        raise DataError(
            f"target label {bad} is out of range for {num_classes} object classes (valid: "
            f"1..{num_classes}; 0 is the background)"
        )


class DetectionTask:
    """Summed detection losses, COCO/VOC evaluation, thresholded prediction and a picture of
    the boxes (module docstring)."""

    name = "detection"
    monitor = "val/mAP50"
    monitor_mode = "max"
    score_threshold = 0.5

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.bundle: DataBundle | None = None
        # Filled by evaluate(): per_class (rows: class, num_gt, AP, AP50, AP75, voc_AP50,
        # voc07_AP50), class_names, table (str), summary (pycocotools' table), count, metrics.
        self.last_eval: dict[str, Any] = {}

    # -- data -----------------------------------------------------------------------------

    def build_data(self) -> DataBundle:
        from ..data.detection import build_detection_data

        self.bundle = build_detection_data(self.cfg.data)
        return self.bundle

    def model_kwargs(self, bundle: DataBundle) -> dict[str, Any]:
        # + 1: the background class, torchvision's convention.
        return {"num_classes": bundle.num_classes + 1}

    def _num_classes(self, model: nn.Module) -> int | None:
        """C object classes (the model's num_classes minus the background)."""
        if self.bundle is not None:
            return self.bundle.num_classes
        n = getattr(unwrap(model), "num_classes", None)
        return n - 1 if isinstance(n, int) and not isinstance(n, bool) and n > 1 else None

    def _check_model_classes(self, model: nn.Module, num_classes: int) -> None:
        n = getattr(unwrap(model), "num_classes", None)
        if isinstance(n, int) and not isinstance(n, bool) and n != num_classes + 1:
            raise ConfigError(
                f"the model has num_classes={n} (background included) but data "
                f"{self.cfg.data.name!r} has {num_classes} object classes (needs "
                f"num_classes={num_classes + 1}); evaluate on the data it was trained on"
            )

    def _class_names(self, model: nn.Module, num_classes: int) -> list[str]:
        for names in (
            getattr(unwrap(model), "class_names", None),
            self.bundle.class_names if self.bundle is not None else None,
        ):
            if names is not None and len(names) == num_classes:
                return [str(n) for n in names]
        return [str(i + 1) for i in range(num_classes)]

    # -- training -------------------------------------------------------------------------

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        """``{"loss": sum of the model's losses, **each loss detached}``."""
        images, targets = batch[0], batch[1]
        num_classes = self._num_classes(model)
        kept = []
        for t in targets:
            boxes, labels = t["boxes"], t["labels"]
            ignore = t.get("ignore")
            if ignore is not None and ignore.numel():
                keep = ~ignore.bool()
                boxes, labels = boxes[keep], labels[keep]
            kept.append({"boxes": boxes.float().reshape(-1, 4), "labels": labels.long()})
        if num_classes is not None:
            _check_target_labels(kept, num_classes)
        losses = model(_to_float(images), kept)
        if not isinstance(losses, Mapping) or not losses:
            raise TrainingError(
                "a detection model in training mode must return a non-empty dict of losses "
                f"(torchvision's convention), got {type(losses).__name__}"
            )
        total = torch.stack([v.float().reshape(()) for v in losses.values()]).sum()
        parts = {k: v.detach() for k, v in losses.items() if k != "loss"}
        return {"loss": total, **parts}

    # -- evaluation -----------------------------------------------------------------------

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """``val/<key>`` for :data:`EVAL_KEYS`: COCO ``mAP`` (IoU 0.50:0.95), ``mAP50``,
        ``mAP75``, ``mAP_small/medium/large``, ``AR100``, and VOC ``voc_AP50`` (area) and
        ``voc07_AP50`` (11-point). NaN where undefined (e.g. no large objects)."""
        device = model_device(model)
        num_classes = self._num_classes(model)
        if num_classes is None:
            raise ConfigError(
                "evaluate needs the number of classes: call build_data() first or use a model "
                "with a num_classes attribute"
            )
        self._check_model_classes(model, num_classes)
        names = self._class_names(model, num_classes)
        metrics = DetectionMetrics(num_classes, names)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for batch in loader:
                    images, targets = batch[0], batch[1]
                    x = _to_float([im.to(device, non_blocking=True) for im in images])
                    outputs = model(x)
                    preds = [
                        {k: o[k].detach().float().cpu() for k in ("boxes", "scores")}
                        | {"labels": o["labels"].detach().cpu()}
                        for o in outputs
                    ]
                    # Targets stay where the loader put them (CPU): the metrics run there.
                    metrics.update(preds, [{k: v.cpu() for k, v in t.items()} for t in targets])
        finally:
            model.train(was_training)
        if metrics.count == 0:
            raise DataError(
                f"the validation set of data {self.cfg.data.name!r} is empty: nothing to evaluate"
            )
        out = metrics.compute()
        self.last_eval = {
            "per_class": metrics.per_class,
            "class_names": names,
            "table": metrics.table(),
            "summary": metrics.summary,
            "count": metrics.count,
            "metrics": out,
        }
        return {f"val/{k}": out[k] for k in EVAL_KEYS}

    def report(self) -> str:
        """Markdown table of the last evaluation's per-class APs ("" before one); the CLI's
        ``eval`` prints it and the run summary includes it. "-" marks a class without
        ground truth (it is not in the means)."""
        return str(self.last_eval.get("table", ""))

    # -- prediction -----------------------------------------------------------------------

    def predict(
        self,
        model: nn.Module,
        images: Sequence[Image.Image],
        topk: int | None = None,
        score_threshold: float | None = None,
    ) -> list[dict[str, Any]]:
        """Per image ``{"boxes": [[x1, y1, x2, y2], ...], "labels": [name, ...],
        "label_ids": [1..C, ...], "scores": [...]}``, best first, in the image's pixels.

        ``score_threshold`` (default 0.5) keeps detections scoring at least that; ``topk``
        (the classification option the CLI always passes) is not used: the model's own
        per-image limit applies.
        """
        thr = self.score_threshold if score_threshold is None else float(score_threshold)
        if not 0.0 <= thr <= 1.0 or math.isnan(thr):
            raise ConfigError(f"score_threshold must be in [0, 1], got {score_threshold!r}")
        if len(images) == 0:
            return []
        from ..data.detection import detection_eval_transform

        transform = (
            self.bundle.eval_transform if self.bundle is not None else detection_eval_transform()
        )
        device = model_device(model)
        batch_size = self.cfg.data.eval_batch_size or self.cfg.data.batch_size
        was_training = model.training
        model.eval()
        outputs: list[dict[str, Tensor]] = []
        try:
            with torch.no_grad():
                for lo in range(0, len(images), batch_size):
                    x = [transform(im).to(device) for im in images[lo : lo + batch_size]]
                    outputs.extend(model(_to_float(x)))
        finally:
            model.train(was_training)
        num_classes = self._num_classes(model)
        results = []
        for o in outputs:
            scores = o["scores"].detach().float().cpu()
            order = torch.argsort(scores, descending=True, stable=True)
            order = order[scores[order] >= thr]
            boxes = o["boxes"].detach().float().cpu()[order]
            label_ids = o["labels"].detach().cpu()[order].tolist()
            k = num_classes if num_classes is not None else max([0, *label_ids])
            names = self._class_names(model, k)
            results.append(
                {
                    "boxes": [[round(v, 2) for v in b] for b in boxes.tolist()],
                    "labels": [names[i - 1] if 1 <= i <= len(names) else str(i) for i in label_ids],
                    "label_ids": label_ids,
                    "scores": [round(s, 4) for s in scores[order].tolist()],
                }
            )
        return results

    def render(self, image: Image.Image, prediction: dict[str, Any]) -> Image.Image:
        """The image (small ones scaled up by an integer factor, nearest-neighbour, to a short
        side of at least 256 px) with each box outlined in its class's colour and labelled
        "name score"."""
        img = image.convert("RGB")
        w, h = img.size
        s = 1
        if min(w, h) < _RENDER_MIN_SIDE:
            s = math.ceil(_RENDER_MIN_SIDE / max(1, min(w, h)))
            img = img.resize((w * s, h * s), Image.Resampling.NEAREST)
        boxes = torch.tensor(prediction.get("boxes") or [], dtype=torch.float32).reshape(-1, 4)
        if boxes.shape[0] == 0:
            return img
        boxes = boxes * s
        names = list(prediction.get("labels") or [""] * len(boxes))
        scores = list(prediction.get("scores") or [None] * len(boxes))
        ids = list(prediction.get("label_ids") or [])
        valid = (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])
        keep = valid.nonzero().flatten().tolist()
        if not keep:
            return img

        def text(i: int) -> str:
            score = scores[i] if i < len(scores) else None
            return f"{names[i]} {score:.2f}" if score is not None else str(names[i])

        def colour(i: int) -> tuple[int, int, int]:
            key = ids[i] if i < len(ids) else sum(map(ord, str(names[i])))
            return _PALETTE[int(key) % len(_PALETTE)]

        out = draw_bounding_boxes(
            TF.pil_to_tensor(img),
            boxes[keep],
            labels=[text(i) for i in keep],
            colors=[colour(i) for i in keep],
            width=max(2, round(min(img.size) / 160)),
            fill_labels=True,
        )
        return TF.to_pil_image(out)

    def write_samples(self, model: nn.Module, dataset: Any, out_dir: Any, n: int) -> list[str]:
        """Write ``n`` validation samples as "ground truth | prediction" PNGs (ignored boxes
        are drawn as ground truth too, labelled "(ignored)")."""
        from pathlib import Path

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        num_classes = self._num_classes(model) or 0
        names = self._class_names(model, num_classes)
        written = []
        for i in range(min(n, len(dataset))):
            image, target = dataset[i]
            pil = TF.to_pil_image(image)
            ids = target["labels"].tolist()
            ignore = target.get("ignore", torch.zeros(len(ids), dtype=torch.bool)).tolist()
            truth = {
                "boxes": target["boxes"].tolist(),
                "labels": [
                    (names[c - 1] if 1 <= c <= len(names) else str(c))
                    + (" (ignored)" if ig else "")
                    for c, ig in zip(ids, ignore, strict=True)
                ],
                "label_ids": ids,
            }
            (pred,) = self.predict(model, [pil])
            left, right = self.render(pil, truth), self.render(pil, pred)
            canvas = Image.new("RGB", (left.width + right.width + 8, left.height), (24, 24, 24))
            canvas.paste(left, (0, 0))
            canvas.paste(right, (left.width + 8, 0))
            path = out / f"val_{i:04d}.png"
            canvas.save(path)
            written.append(str(path))
        return written
