"""Image classification: the loss, evaluation, prediction and picture the trainer asks for.

Shapes: N images, K classes. Batches are ``(images uint8 Tensor[N, 3, H, W], labels int64
Tensor[N])`` already on the model's device; the float conversion and normalisation happen here,
as the last step (DESIGN.md §10).

Auxiliary heads: a model in training mode may return ``AuxOutput(logits, aux=(...))`` (GoogLeNet's
two side classifiers, arXiv:1409.4842 §5). The loss is

    CE(logits) + aux_weight * sum_i CE(aux_i)

with ``aux_weight = cfg.loss.aux_weight`` (0.3 in the paper). The paper discards the auxiliary
heads at inference; so do we (evaluate/predict use ``logits`` only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..data.bundle import DataBundle
from ..data.transforms import batch_mix, eval_transform, normalize
from ..engine.config import RunConfig
from ..errors import ConfigError, DataError
from ..metrics.classification import ClassificationMetrics, check_labels
from ..models.outputs import AuxOutput
from .base import model_device, to_device, unwrap

__all__ = ["ClassificationTask"]

# render(): tiny inputs (8x8 digits, 32x32 CIFAR) are blown up to at least this short side.
_RENDER_MIN_SIDE = 256


def _split_output(out: Any) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Model output -> (main logits Tensor[N, K], auxiliary logits)."""
    if isinstance(out, AuxOutput):
        return out.logits, tuple(out.aux)
    return out, ()


class ClassificationTask:
    """Cross-entropy training (with auxiliary heads, label smoothing, mixup/cutmix), top-1/top-5
    and per-class evaluation, top-k prediction and a captioned picture of it."""

    name = "classification"
    monitor = "val/acc1"
    monitor_mode = "max"

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.bundle: DataBundle | None = None
        # Filled by evaluate(): confusion_matrix (Tensor[K, K] int64, rows true class),
        # per_class_acc (list, None for classes absent from the val set), class_names, count.
        self.last_eval: dict[str, Any] = {}
        self._mixer: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None
        self._mixer_classes: int | None = None

    # -- data -----------------------------------------------------------------------------

    def build_data(self) -> DataBundle:
        # Imported here: the dataset builders pull in every data format.
        from ..data.classification import build_classification_data

        self.bundle = build_classification_data(self.cfg.data)
        return self.bundle

    def model_kwargs(self, bundle: DataBundle) -> dict[str, Any]:
        return {"num_classes": bundle.num_classes}

    def _num_classes(self, model: nn.Module) -> int | None:
        if self.bundle is not None:
            return self.bundle.num_classes
        n = getattr(unwrap(model), "num_classes", None)
        return n if isinstance(n, int) and not isinstance(n, bool) else None

    def _normalize(self, images: Tensor) -> Tensor:
        if self.bundle is not None:
            mean, std = self.bundle.mean, self.bundle.std
        else:
            mean, std = tuple(self.cfg.data.mean), tuple(self.cfg.data.std)
        return normalize(images, mean, std)

    def _mix(self, num_classes: int | None):
        """The mixup/cutmix callable, or None when neither is configured."""
        d = self.cfg.data
        if d.mixup_alpha == 0 and d.cutmix_alpha == 0:
            return None  # (batch_mix checks negative alphas)
        if num_classes is None:
            raise ConfigError(
                "data.mixup_alpha/data.cutmix_alpha need the number of classes: call "
                "build_data() first or use a model with a num_classes attribute"
            )
        if self._mixer is None or self._mixer_classes != num_classes:
            self._mixer = batch_mix(d, num_classes)
            self._mixer_classes = num_classes
        return self._mixer

    def _class_names(self, model: nn.Module, num_outputs: int) -> list[str]:
        for names in (
            getattr(unwrap(model), "class_names", None),
            self.bundle.class_names if self.bundle is not None else None,
        ):
            # Names for another label set would mislabel every prediction: ignore them.
            if names is not None and len(names) == num_outputs:
                return [str(n) for n in names]
        return [str(i) for i in range(num_outputs)]

    # -- training -------------------------------------------------------------------------

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        """``{"loss", "acc1"}`` or, with auxiliary heads, ``{"loss", "loss_main", "loss_aux1",
        ...}``. ``loss`` carries the graph; the parts are detached. ``acc1`` is left out under
        mixup/cutmix, where the targets are mixtures of two labels."""
        images, labels = batch[0], batch[1]  # (N, 3, H, W) uint8, (N,) int64
        num_classes = self._num_classes(model)
        if num_classes is not None:
            # Checked before the forward pass: on CUDA an out-of-range target is a device-side
            # assert that kills the process without naming the label.
            check_labels(labels, num_classes)
        x = self._normalize(images)  # (N, 3, H, W) float
        targets: Tensor = labels
        mix = self._mix(num_classes)
        if mix is not None:
            x, targets = mix(x, labels)  # targets: (N, K) soft labels
        logits, aux = _split_output(model(x))
        if num_classes is None:
            check_labels(labels, logits.shape[1])
        smoothing = self.cfg.loss.label_smoothing
        loss_main = F.cross_entropy(logits, targets, label_smoothing=smoothing)
        parts: dict[str, Tensor] = {}
        if aux:
            aux_losses = [F.cross_entropy(a, targets, label_smoothing=smoothing) for a in aux]
            loss = loss_main + self.cfg.loss.aux_weight * torch.stack(aux_losses).sum()
            parts["loss_main"] = loss_main.detach()
            for i, part in enumerate(aux_losses, start=1):
                parts[f"loss_aux{i}"] = part.detach()
        else:
            loss = loss_main
        if mix is None:
            parts["acc1"] = (logits.detach().argmax(dim=1) == labels).float().mean()
        return {"loss": loss, **parts}

    # -- evaluation -----------------------------------------------------------------------

    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """``val/loss`` (plain cross-entropy, without label smoothing: the model's real
        negative log-likelihood), ``val/acc1``, ``val/acc5`` and ``val/mean_class_acc``."""
        device = model_device(model)
        channels_last = self.cfg.trainer.channels_last
        num_classes = self._num_classes(model)
        metrics: ClassificationMetrics | None = None
        # Running sums stay on the device: no host sync per batch beyond the label check.
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for batch in loader:
            batch = to_device(batch, device, channels_last=channels_last)
            images, labels = batch[0], batch[1]
            logits, _ = _split_output(model(self._normalize(images)))
            logits = logits.float()
            if metrics is None:
                metrics = ClassificationMetrics(num_classes or logits.shape[1])
            metrics.update(logits, labels)  # checks labels (and K) before the loss sees them
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        if metrics is None or metrics.count == 0:
            raise DataError(
                f"the validation set of data {self.cfg.data.name!r} is empty: nothing to evaluate"
            )
        out = metrics.compute()
        self.last_eval = {
            "confusion_matrix": out["confusion_matrix"],
            "per_class_acc": out["per_class_acc"],
            "class_names": self._class_names(model, metrics.num_classes),
            "count": out["count"],
        }
        return {
            "val/loss": float(loss_sum) / out["count"],
            "val/acc1": out["acc1"],
            "val/acc5": out["acc5"],
            "val/mean_class_acc": out["mean_class_acc"],
        }

    # -- prediction -----------------------------------------------------------------------

    def predict(
        self, model: nn.Module, images: Sequence[Image.Image], topk: int = 5
    ) -> list[dict[str, Any]]:
        """``[{"topk": [{"label", "index", "prob"}, ...]}]`` per image, most probable first;
        ``topk`` is clipped to the number of classes."""
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ConfigError(f"topk must be a positive integer, got {topk!r}")
        if len(images) == 0:
            return []
        transform = (
            self.bundle.eval_transform if self.bundle is not None else eval_transform(self.cfg.data)
        )
        device = model_device(model)
        batch_size = self.cfg.data.eval_batch_size or self.cfg.data.batch_size
        was_training = model.training
        model.eval()
        probs_chunks = []
        try:
            with torch.no_grad():
                for lo in range(0, len(images), batch_size):
                    # PIL decoding and resizing are per image; everything after is batched.
                    # The eval transform handles every PIL mode the way the val set does.
                    x = torch.stack([transform(im) for im in images[lo : lo + batch_size]])
                    # x: (n, 3, H, W) uint8
                    logits, _ = _split_output(model(self._normalize(x.to(device))))
                    probs_chunks.append(logits.float().softmax(dim=1).cpu())
        finally:
            model.train(was_training)
        probs = torch.cat(probs_chunks)  # (N, K)
        k = min(topk, probs.shape[1])
        top_p, top_i = probs.topk(k, dim=1)  # (N, k), sorted descending
        names = self._class_names(model, probs.shape[1])
        return [
            {
                "topk": [
                    {"label": names[i], "index": i, "prob": p} for p, i in zip(ps, idx, strict=True)
                ]
            }
            for ps, idx in zip(top_p.tolist(), top_i.tolist(), strict=True)
        ]

    def render(self, image: Image.Image, prediction: dict[str, Any]) -> Image.Image:
        """The image (tiny ones scaled up by an integer factor, nearest-neighbour, to a short
        side of at least 256 px) above a band listing the top-k labels with bars for their
        probabilities."""
        img = image.convert("RGB")
        w, h = img.size
        if min(w, h) < _RENDER_MIN_SIDE:
            # Integer factor: every source pixel becomes an equal square block.
            s = math.ceil(_RENDER_MIN_SIDE / max(1, min(w, h)))
            img = img.resize((w * s, h * s), Image.Resampling.NEAREST)
            w, h = img.size

        entries = prediction.get("topk", [])
        lines = [
            f"{r + 1}. {e.get('label', e.get('index', '?'))}  {100 * float(e.get('prob', 0)):.1f}%"
            for r, e in enumerate(entries)
        ] or ["(no prediction)"]
        probs = [float(e.get("prob", 0.0)) for e in entries] or [0.0]

        font_size = max(14, round(w / 28))
        try:
            font = ImageFont.load_default(size=font_size)
        except (TypeError, ValueError, OSError):  # Pillow built without FreeType
            font = ImageFont.load_default()
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        boxes = [measure.textbbox((0, 0), line, font=font) for line in lines]
        pad = max(4, font_size // 3)
        line_h = max(b[3] for b in boxes) + pad
        text_w = max(b[2] for b in boxes) + 2 * pad

        canvas_w = max(w, text_w)
        band_h = len(lines) * line_h + pad
        out = Image.new("RGB", (canvas_w, h + band_h), (24, 24, 24))
        out.paste(img, ((canvas_w - w) // 2, 0))
        draw = ImageDraw.Draw(out)
        for r, (line, p) in enumerate(zip(lines, probs, strict=True)):
            top = h + pad // 2 + r * line_h
            bar = round(min(max(p, 0.0), 1.0) * canvas_w)
            if bar > 0:
                draw.rectangle((0, top, bar - 1, top + line_h - 2), fill=(46, 92, 160))
            draw.text((pad, top + pad // 2), line, fill=(255, 255, 255), font=font)
        return out
