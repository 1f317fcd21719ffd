"""Semantic segmentation: the loss, evaluation, prediction and overlays the trainer asks for.

Shapes: N images, K classes (background included), H x W pixels. Batches are ``(images uint8
Tensor[N, 3, H, W], masks int64 Tensor[N, H, W])`` on the model's device; masks hold class
indices or ``loss.ignore_index`` (255). Normalisation happens here, as the last step.

Loss, per head (``loss.*``)::

    ce_weight * CE(logits, mask; ignore) + dice_weight * (1 - soft Dice(logits, mask; ignore))

and the total is ``main + aux_weight * sum(aux heads)``: U-Net's deep-supervision heads and
DeepLab v3's FCN head on layer3 arrive as ``AuxOutput(logits, aux=(...))`` in training mode.
DeepLab's torchvision recipe weights its auxiliary loss 0.5 and the U-Net++/deep-supervision
papers use equal weights; ``loss.aux_weight`` (0.3 by default, shared with GoogLeNet) sets it.

Output sizes: the paper's U-Net (``unet_original``, unpadded convolutions) predicts a centre
region smaller than its input (388 x 388 for 572 x 572): its target is the mask's centre crop of
that size, as in the paper's overlap-tile scheme. Any other size mismatch (a head at a lower
resolution) is resolved by bilinear upsampling of the logits to the mask's size.

Evaluation accumulates one confusion matrix over the validation set
(:class:`~visionzoo.metrics.segmentation.SegmentationMetrics`): ``val/mIoU`` (mean over classes
present in the prediction or the ground truth), ``val/mDice``, ``val/pixel_acc`` and
``val/loss``; the per-class table is :meth:`SegmentationTask.report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..data.bundle import DataBundle
from ..data.transforms import normalize
from ..engine.config import RunConfig
from ..errors import ConfigError, DataError
from ..losses.dice import soft_dice_loss
from ..losses.segmentation import segmentation_cross_entropy
from ..metrics.segmentation import SegmentationMetrics
from ..models.outputs import AuxOutput
from .base import model_device, to_device, unwrap
from .classification import upscale_for_display

__all__ = ["SegmentationTask", "palette", "colorize", "overlay"]

_RENDER_MIN_SIDE = 256
_OVERLAY_ALPHA = 0.5
_IGNORE_COLOUR = (255, 255, 255)


def palette(num_classes: int) -> np.ndarray:
    """``uint8 [num_classes, 3]`` colours: class 0 black, then the bit-interleaved sequence
    Pascal VOC's masks use (so a VOC mask coloured here looks as it does in the data set)."""
    out = np.zeros((num_classes, 3), dtype=np.uint8)
    for i in range(num_classes):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            # The lowest three bits of the class go to the highest free bit of r, g and b.
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out[i] = (r, g, b)
    return out


def colorize(mask: np.ndarray, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """Class-index mask ``[H, W]`` -> RGB ``uint8 [H, W, 3]`` (ignore pixels white)."""
    pal = palette(max(num_classes, 1))
    m = np.asarray(mask).astype(np.int64)
    out = pal[np.clip(m, 0, len(pal) - 1)]
    if ignore_index is not None:
        out[m == ignore_index] = _IGNORE_COLOUR
    return out


def overlay(
    image: Image.Image, mask: np.ndarray, num_classes: int, alpha: float = _OVERLAY_ALPHA
) -> Image.Image:
    """The image with the mask's class colours blended in (background pixels untouched)."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    m = np.asarray(mask)
    if m.shape != rgb.shape[:2]:
        raise ValueError(f"mask {m.shape} does not match image {rgb.shape[:2]}")
    colours = colorize(m, num_classes).astype(np.float32)
    fg = (m != 0)[..., None]
    out = np.where(fg, (1 - alpha) * rgb + alpha * colours, rgb)
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def _split_output(out: Any) -> tuple[Tensor, tuple[Tensor, ...]]:
    if isinstance(out, AuxOutput):
        return out.logits, tuple(out.aux)
    if isinstance(out, dict):  # torchvision segmentation models: {"out", "aux"}
        aux = (out["aux"],) if out.get("aux") is not None else ()
        return out["out"], aux
    return out, ()


def _center_crop(mask: Tensor, size: tuple[int, int]) -> Tensor:
    h, w = mask.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return mask[..., top : top + size[0], left : left + size[1]]


def _fit(logits: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Logits and target of the same spatial size (module docstring)."""
    lh, lw = logits.shape[-2:]
    mh, mw = mask.shape[-2:]
    if (lh, lw) == (mh, mw):
        return logits, mask
    if lh <= mh and lw <= mw and (mh - lh) % 2 == 0 and (mw - lw) % 2 == 0 and lh * 4 > mh:
        return logits, _center_crop(mask, (lh, lw))  # valid-convolution U-Net
    return F.interpolate(logits, size=(mh, mw), mode="bilinear", align_corners=False), mask


class SegmentationTask:
    """Cross-entropy (+ Dice) training with auxiliary heads, confusion-matrix evaluation,
    per-pixel prediction and colour overlays."""

    name = "segmentation"
    monitor = "val/mIoU"
    monitor_mode = "max"

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.bundle: DataBundle | None = None
        self.last_eval: dict[str, Any] = {}
        loss = cfg.loss
        for key in ("ce_weight", "dice_weight", "aux_weight"):
            if not getattr(loss, key) >= 0:
                raise ConfigError(f"loss.{key} must be >= 0, got {getattr(loss, key)}")
        if loss.ce_weight == 0 and loss.dice_weight == 0:
            raise ConfigError("loss.ce_weight and loss.dice_weight are both 0: nothing to train")
        ign = loss.ignore_index
        if isinstance(ign, bool) or not isinstance(ign, int) or ign < 0:
            raise ConfigError(f"loss.ignore_index must be a non-negative integer, got {ign!r}")
        self.ignore_index = ign

    # -- data -----------------------------------------------------------------------------

    def build_data(self) -> DataBundle:
        from ..data.segmentation import build_segmentation_data

        self.bundle = build_segmentation_data(self.cfg.data, ignore_index=self.ignore_index)
        if self.ignore_index < self.bundle.num_classes:
            raise ConfigError(
                f"loss.ignore_index={self.ignore_index} is one of the data's "
                f"{self.bundle.num_classes} classes; use a value >= {self.bundle.num_classes}"
            )
        return self.bundle

    def model_kwargs(self, bundle: DataBundle) -> dict[str, Any]:
        # Every segmentation builder takes in_chans; the paper's U-Net defaults to 1 (grey
        # cell images) but our data are RGB.
        return {"num_classes": bundle.num_classes, "in_chans": 3}

    def _num_classes(self, model: nn.Module, logits: Tensor | None = None) -> int:
        if self.bundle is not None:
            return self.bundle.num_classes
        n = getattr(unwrap(model), "num_classes", None)
        if isinstance(n, int) and not isinstance(n, bool):
            return n
        if logits is not None:
            return int(logits.shape[1])
        raise ConfigError("cannot tell the number of classes: call build_data() first")

    def _normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.bundle is not None:
            return tuple(self.bundle.mean), tuple(self.bundle.std)
        return tuple(self.cfg.data.mean), tuple(self.cfg.data.std)

    def class_names(self, model: nn.Module, k: int) -> list[str]:
        for names in (
            getattr(unwrap(model), "class_names", None),
            self.bundle.class_names if self.bundle is not None else None,
        ):
            if names is not None and len(names) == k:
                return [str(n) for n in names]
        return [str(i) for i in range(k)]

    def _check_masks(self, masks: Tensor, k: int) -> None:
        # Before the loss: on CUDA an out-of-range target is a device-side assert that kills
        # the process without naming the value.
        bad = (masks < 0) | ((masks >= k) & (masks != self.ignore_index))
        if bool(bad.any()):
            values = torch.unique(masks[bad]).tolist()[:5]
            raise DataError(
                f"mask values {values} are not classes: valid are 0..{k - 1} or the ignore "
                f"value {self.ignore_index}"
            )

    # -- training -------------------------------------------------------------------------

    def _head_loss(self, logits: Tensor, masks: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        lw = self.cfg.loss
        logits, target = _fit(logits, masks)
        parts: dict[str, Tensor] = {}
        loss = logits.new_zeros((), dtype=torch.float32)
        if lw.ce_weight > 0:
            ce = segmentation_cross_entropy(logits.float(), target, ignore_index=self.ignore_index)
            loss = loss + lw.ce_weight * ce
            parts["ce"] = ce.detach()
        if lw.dice_weight > 0:
            dice = soft_dice_loss(logits, target, ignore_index=self.ignore_index)
            loss = loss + lw.dice_weight * dice
            parts["dice"] = dice.detach()
        return loss, parts

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        """``{"loss", "loss_ce", ["loss_dice"], ["loss_main", "loss_aux1", ...],
        "pixel_acc"}`` (parts detached; ``loss`` carries the graph)."""
        images, masks = batch[0], batch[1]  # (N, 3, H, W) uint8, (N, H, W) int64
        x = normalize(images, *self._normalization())
        logits, aux = _split_output(model(x))
        self._check_masks(masks, self._num_classes(model, logits))
        loss, parts = self._head_loss(logits, masks)
        out: dict[str, Tensor] = {f"loss_{k}": v for k, v in parts.items()}
        if aux:
            out["loss_main"] = loss.detach()
            aux_losses = [self._head_loss(a, masks)[0] for a in aux]
            loss = loss + self.cfg.loss.aux_weight * torch.stack(aux_losses).sum()
            for i, a in enumerate(aux_losses, start=1):
                out[f"loss_aux{i}"] = a.detach()
        with torch.no_grad():
            fl, ft = _fit(logits.detach(), masks)
            valid = ft != self.ignore_index
            correct = (fl.argmax(dim=1) == ft) & valid
            out["pixel_acc"] = correct.sum() / valid.sum().clamp_min(1)
        return {"loss": loss, **out}

    # -- evaluation -----------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """``val/loss`` (cross-entropy over non-ignored pixels), ``val/mIoU``, ``val/mDice``
        and ``val/pixel_acc``; per-class IoU and Dice go to ``last_eval`` and :meth:`report`."""
        device = model_device(model)
        channels_last = self.cfg.trainer.channels_last
        metrics: SegmentationMetrics | None = None
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        pixels = torch.zeros((), dtype=torch.int64, device=device)
        for batch in loader:
            batch = to_device(batch, device, channels_last=channels_last)
            images, masks = batch[0], batch[1]
            logits, _ = _split_output(model(normalize(images, *self._normalization())))
            logits, target = _fit(logits.float(), masks)
            k = self._num_classes(model, logits)
            if metrics is None:
                metrics = SegmentationMetrics(k, ignore_index=self.ignore_index)
            self._check_masks(target, k)
            metrics.update(logits, target)
            valid = target != self.ignore_index
            loss_sum += F.cross_entropy(
                logits, target, ignore_index=self.ignore_index, reduction="sum"
            )
            pixels += valid.sum()
        if metrics is None:
            raise DataError(
                f"the validation set of data {self.cfg.data.name!r} is empty: nothing to evaluate"
            )
        out = metrics.compute()
        self.last_eval = {
            "IoU": out["IoU"],
            "Dice": out["Dice"],
            "class_names": self.class_names(model, metrics.num_classes),
            "confusion_matrix": out["confusion_matrix"],
            "pixels": int(pixels),
        }
        return {
            "val/loss": float(loss_sum) / max(int(pixels), 1),
            "val/mIoU": out["mIoU"],
            "val/mDice": out["mDice"],
            "val/pixel_acc": out["pixel_acc"],
        }

    def report(self) -> str:
        """Markdown table of the last evaluation's per-class IoU and Dice ("" before one).
        A class absent from both prediction and ground truth shows "-" (it is not in mIoU)."""
        if not self.last_eval:
            return ""
        cm = self.last_eval["confusion_matrix"]
        gt = cm.sum(dim=1).tolist()
        rows = ["| class | IoU | Dice | pixels (ground truth) |", "|---|---:|---:|---:|"]
        for name, iou, dice, n in zip(
            self.last_eval["class_names"],
            self.last_eval["IoU"],
            self.last_eval["Dice"],
            gt,
            strict=True,
        ):
            f_iou = "-" if iou is None else f"{iou:.4f}"
            f_dice = "-" if dice is None else f"{dice:.4f}"
            rows.append(f"| {name} | {f_iou} | {f_dice} | {int(n):,} |")
        return "\n".join(rows)

    # -- prediction -----------------------------------------------------------------------

    def _eval_transform(self):
        if self.bundle is not None:
            return self.bundle.eval_transform
        from ..data.segmentation import segmentation_eval_transform

        return segmentation_eval_transform(self.cfg.data)

    def predict_masks(self, model: nn.Module, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """Class-index masks ``uint8/int64 [H, W]``, each at its image's own size (logits are
        upsampled bilinearly from the network resolution before the argmax)."""
        transform = self._eval_transform()
        device = model_device(model)
        batch_size = self.cfg.data.eval_batch_size or self.cfg.data.batch_size
        was_training = model.training
        model.eval()
        masks: list[np.ndarray] = []
        try:
            with torch.no_grad():
                for lo in range(0, len(images), batch_size):
                    chunk = images[lo : lo + batch_size]
                    x = torch.stack([transform(im) for im in chunk]).to(device)
                    logits, _ = _split_output(model(normalize(x, *self._normalization())))
                    for im, lg in zip(chunk, logits.float(), strict=True):
                        w, h = im.size
                        up = F.interpolate(
                            lg[None], size=(h, w), mode="bilinear", align_corners=False
                        )
                        masks.append(up[0].argmax(dim=0).cpu().numpy().astype(np.int64))
        finally:
            model.train(was_training)
        return masks

    def predict(
        self, model: nn.Module, images: Sequence[Image.Image], **_: Any
    ) -> list[dict[str, Any]]:
        """Per image: ``{"size": [W, H], "classes": [{"label", "index", "fraction"}, ...]}``
        (classes present, largest area first) and ``"_mask"``, the class-index mask as a NumPy
        array: not JSON, so ``visionzoo predict`` writes it as a palette PNG beside the
        overlay."""
        if len(images) == 0:
            return []
        masks = self.predict_masks(model, images)
        k = self._num_classes(model)
        names = self.class_names(model, k)
        out = []
        for mask in masks:
            counts = np.bincount(mask.ravel(), minlength=k)
            total = max(int(mask.size), 1)
            present = [
                {"label": names[i], "index": int(i), "fraction": round(int(c) / total, 6)}
                for i, c in sorted(enumerate(counts), key=lambda t: -t[1])
                if c > 0
            ]
            out.append(
                {
                    "size": [int(mask.shape[1]), int(mask.shape[0])],
                    "classes": present,
                    "num_classes": k,
                    "_mask": mask,
                }
            )
        return out

    def render(self, image: Image.Image, prediction: dict[str, Any]) -> Image.Image:
        """The image with its predicted mask blended in, above a legend of the classes
        present with their colours and area fractions. Tiny images are scaled up (nearest)."""
        mask = np.asarray(prediction["_mask"])
        k = int(prediction.get("num_classes", int(mask.max()) + 1))
        img = upscale_for_display(overlay(image, mask, k))
        w, h = img.size
        entries = [e for e in prediction.get("classes", [])]
        font_size = max(14, round(w / 28))
        try:
            font = ImageFont.load_default(size=font_size)
        except (TypeError, ValueError, OSError):
            font = ImageFont.load_default()
        pad = max(4, font_size // 3)
        line_h = font_size + 2 * pad
        band_h = max(1, len(entries)) * line_h + pad
        out = Image.new("RGB", (w, h + band_h), (24, 24, 24))
        out.paste(img, (0, 0))
        draw = ImageDraw.Draw(out)
        pal = palette(max(k, 1))
        if not entries:
            draw.text((pad, h + pad), "(no prediction)", fill=(255, 255, 255), font=font)
        for r, e in enumerate(entries):
            top = h + pad + r * line_h
            colour = tuple(int(c) for c in pal[min(int(e["index"]), len(pal) - 1)])
            draw.rectangle(
                (pad, top, pad + font_size, top + font_size), fill=colour, outline=(200, 200, 200)
            )
            text = f"{e['label']}  {100 * float(e['fraction']):.1f}%"
            draw.text((2 * pad + font_size, top), text, fill=(255, 255, 255), font=font)
        return out

    def render_sample(
        self, image: Tensor, mask: Tensor, prediction: np.ndarray, k: int
    ) -> Image.Image:
        """Validation sample ``image`` (uint8 [3, H, W]) as three panels: image, ground truth
        overlay, prediction overlay (what ``visionzoo eval --out`` writes)."""
        pil = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
        gt = overlay(pil, mask.cpu().numpy(), k)
        pr = overlay(pil, prediction, k)
        panels = [upscale_for_display(p, _RENDER_MIN_SIDE // 2) for p in (pil, gt, pr)]
        w, h = panels[0].size
        out = Image.new("RGB", (3 * w + 2 * 4, h), (24, 24, 24))
        for i, p in enumerate(panels):
            out.paste(p, (i * (w + 4), 0))
        return out

    def write_samples(self, model: nn.Module, dataset: Any, out_dir: Any, n: int) -> list[str]:
        """Write ``n`` validation samples as image | ground truth | prediction PNGs."""
        from pathlib import Path

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        device = model_device(model)
        written = []
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for i in range(min(n, len(dataset))):
                    image, mask = dataset[i]
                    logits, _ = _split_output(
                        model(normalize(image[None].to(device), *self._normalization()))
                    )
                    logits, target = _fit(logits.float(), mask[None].to(device))
                    k = self._num_classes(model, logits)
                    pred = logits[0].argmax(dim=0).cpu().numpy()
                    img = (
                        image
                        if target.shape[-2:] == mask.shape[-2:]
                        else _center_crop(image, tuple(target.shape[-2:]))
                    )
                    path = out / f"val_{i:04d}.png"
                    self.render_sample(img, target[0], pred, k).save(path)
                    written.append(str(path))
        finally:
            model.train(was_training)
        return written
