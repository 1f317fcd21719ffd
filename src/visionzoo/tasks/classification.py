"""Image classification: the loss, evaluation, prediction and picture the trainer asks for.

Shapes: N images, K classes. Batches are ``(images uint8 Tensor[N, 3, H, W], labels int64
Tensor[N])`` already on the model's device; the float conversion and normalisation happen here,
as the last step (DESIGN.md §10).

Auxiliary heads: a model in training mode may return ``AuxOutput(logits, aux=(...))`` (GoogLeNet's
two side classifiers, arXiv:1409.4842 §5). The loss is

    CE(logits) + aux_weight * sum_i CE(aux_i)

with ``aux_weight = cfg.loss.aux_weight`` (0.3 in the paper). The paper discards the auxiliary
heads at inference; so do we (evaluate/predict use ``logits`` only).

Distillation (DeiT, arXiv:2012.12877 §5; ``cfg.distill``, losses in
:mod:`visionzoo.losses.distillation`). With ``distill.type`` soft or hard, a trained teacher
(``distill.teacher``: a checkpoint or run folder written by ``visionzoo train``) is loaded once,
at the first training step, with ``load_model`` (EMA weights when the run kept them), put in eval
mode with ``requires_grad=False`` and moved to the batch's device. It runs under
``torch.no_grad`` inside the trainer's autocast (``training_step`` is called inside it), on the
same (possibly mixup/cutmix-mixed) images, normalised with the *teacher's* own
``data.mean``/``data.std`` and, when its ``data.image_size`` differs from the batch's, resized to
it (bilinear, antialiased). The loss is DeiT's::

    (1 - alpha) * CE(logits_cls, labels) + alpha * D(logits_dist, teacher)

where D is soft (tau^2 KL at temperature tau) or hard (CE with the teacher's argmax). A model
with a [distill] token (``distilled=True``, returning ``AuxOutput(logits, (logits_dist,))``)
puts D on its [distill] head; any other classifier puts both terms on its only head (other
auxiliary heads keep their label loss times ``loss.aux_weight``). DeiT's hard distillation is
``alpha = 0.5``; soft distillation in DeiT's code defaults to ``alpha = 0.5, tau = 1``.

A distilled model trained *without* a teacher (``distill.type=none``): DeiT §5 notes that a
[distill] token trained on the labels is just a second [CLS] token, so its head learns the labels
with the same weight as the [CLS] head: ``(CE(logits_cls) + CE(logits_dist)) / 2`` (the hard
composition with the labels in place of the teacher; one CE's scale, so the same lr fits). This
is a departure from DeiT's official code, which leaves ``head_dist`` untrained without a teacher
although evaluation averages both heads. ``distill.teacher`` is ignored when the type is none, so
one recipe serves the no-distillation baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..data.bundle import DataBundle
from ..data.transforms import batch_mix, eval_transform, normalize
from ..engine.checkpoint import load_model
from ..engine.config import DataConfig, RunConfig
from ..errors import CheckpointError, ConfigError, DataError, UnknownModelError
from ..losses.distillation import DISTILL_TYPES, distillation_loss
from ..metrics.classification import ClassificationMetrics, check_labels
from ..models.outputs import AuxOutput
from ..registry import get_model_entry, list_models
from .base import model_device, to_device, unwrap

__all__ = [
    "ClassificationTask",
    "Teacher",
    "check_distill_config",
    "load_teacher",
    "render_topk",
    "resolve_teacher_path",
    "upscale_for_display",
]

# render(): tiny inputs (8x8 digits, 32x32 CIFAR) are blown up to at least this short side.
_RENDER_MIN_SIDE = 256


def _split_output(out: Any) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Model output -> (main logits Tensor[N, K], auxiliary logits)."""
    if isinstance(out, AuxOutput):
        return out.logits, tuple(out.aux)
    return out, ()


def check_distill_config(cfg: RunConfig) -> None:
    """ConfigError for a ``distill`` section that cannot run (the teacher file is checked when
    it is loaded)."""
    d = cfg.distill
    if d.type not in DISTILL_TYPES:
        raise ConfigError(
            f"distill.type: unknown value {d.type!r}; valid: {', '.join(DISTILL_TYPES)}"
        )
    if not 0.0 <= d.alpha <= 1.0:
        raise ConfigError(
            f"distill.alpha must be in [0, 1] (the weight of the distillation term), got {d.alpha}"
        )
    if not d.tau > 0:
        raise ConfigError(f"distill.tau must be > 0 (the softmax temperature), got {d.tau}")
    if d.type != "none" and not d.teacher:
        raise ConfigError(
            f"distill.type={d.type} needs distill.teacher=CHECKPOINT_OR_RUN_DIR: a classifier "
            "trained by `visionzoo train` on the same classes"
        )


@dataclass
class Teacher:
    """A loaded distillation teacher and the input it expects."""

    model: nn.Module
    path: str  # the checkpoint file
    image_size: int | None  # the teacher's data.image_size (None: feed the batch as it is)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int | None

    def logits(self, x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
        """Teacher logits Tensor[N, K] for the student's normalised input ``x``
        (Tensor[N, 3, H, W], normalised with ``mean``/``std``), without gradients."""
        with torch.no_grad():
            if tuple(mean) != self.mean or tuple(std) != self.std:
                # Undo the student's normalisation and apply the teacher's; affine, so this is
                # exact for mixup/cutmix images too (they are convex mixtures of pixels).
                dev, dt = x.device, x.dtype
                s_m = torch.as_tensor(mean, dtype=dt, device=dev).view(-1, 1, 1)
                s_s = torch.as_tensor(std, dtype=dt, device=dev).view(-1, 1, 1)
                t_m = torch.as_tensor(self.mean, dtype=dt, device=dev).view(-1, 1, 1)
                t_s = torch.as_tensor(self.std, dtype=dt, device=dev).view(-1, 1, 1)
                x = (x * s_s + s_m - t_m) / t_s
            size = self.image_size
            if size is not None and tuple(x.shape[-2:]) != (size, size):
                # The teacher saw size x size images in training (its eval transform).
                x = F.interpolate(
                    x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
                )
            self.model.eval()  # whatever a caller did to it: BN/dropout in inference mode
            logits, _ = _split_output(self.model(x))
        return logits.detach()


def resolve_teacher_path(spec: str) -> Path:
    """The checkpoint file ``distill.teacher`` names: a file, or a run folder's
    ``checkpoints/best.pt`` (else ``last.pt``). A bare registry model name is a ConfigError."""
    p = Path(spec)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            candidate = p / "checkpoints" / name
            if candidate.is_file():
                return candidate
        raise CheckpointError(
            f"distill.teacher={spec!r} is a folder without checkpoints/best.pt or "
            "checkpoints/last.pt; give a run folder written by `visionzoo train` or a checkpoint"
        )
    if not p.exists() and spec in list_models():
        raise ConfigError(
            f"distill.teacher={spec!r} is a model name, not a trained teacher: distillation needs "
            "a teacher trained on the same classes, and nothing is downloaded. Train one first "
            f"(`visionzoo train {spec} data=...`) and pass its run folder or checkpoint "
            "(distill.teacher=runs/<run>)"
        )
    return p


def load_teacher(spec: str, device: torch.device | str = "cpu") -> Teacher:
    """Load the teacher ``distill.teacher`` names (see :func:`resolve_teacher_path`): eval mode,
    no gradients, on ``device``. CheckpointError names the file when it is missing or bad."""
    path = resolve_teacher_path(spec)
    try:
        model = load_model(path, map_location=torch.device(device))
    except CheckpointError as e:
        raise CheckpointError(f"distill.teacher: {e}") from None
    model.requires_grad_(False)
    model.eval()
    cfg = getattr(model, "visionzoo_config", None) or {}
    name = (cfg.get("model") or {}).get("name")
    try:
        task = cfg.get("task") or get_model_entry(name).task
    except UnknownModelError:
        task = None
    if task not in (None, "classification"):
        raise ConfigError(
            f"distill.teacher={spec!r} is a {task} model ({name}); the teacher must be a classifier"
        )
    data = cfg.get("data") or {}
    defaults = DataConfig()
    size = data.get("image_size")
    n = getattr(model, "num_classes", None)
    return Teacher(
        model=model,
        path=str(path),
        image_size=int(size) if isinstance(size, int) and not isinstance(size, bool) else None,
        mean=tuple(float(v) for v in data.get("mean") or defaults.mean),
        std=tuple(float(v) for v in data.get("std") or defaults.std),
        num_classes=n if isinstance(n, int) and not isinstance(n, bool) else None,
    )


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
        check_distill_config(cfg)
        # Loaded at the first training step (evaluate/predict never need it).
        self.teacher: Teacher | None = None

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

    def _normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The (mean, std) this run normalises its images with."""
        if self.bundle is not None:
            return tuple(self.bundle.mean), tuple(self.bundle.std)
        return tuple(self.cfg.data.mean), tuple(self.cfg.data.std)

    def _normalize(self, images: Tensor) -> Tensor:
        return normalize(images, *self._normalization())

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

    def _teacher_for(self, model: nn.Module, device: torch.device) -> Teacher:
        """The teacher, loaded once and checked against the student's classes."""
        if self.teacher is None:
            spec = str(self.cfg.distill.teacher)
            teacher = load_teacher(spec, device)
            if self.cfg.trainer.channels_last:
                teacher.model.to(memory_format=torch.channels_last)
            student_k = self._num_classes(model)
            if teacher.num_classes is not None and student_k is not None:
                self._check_teacher_classes(teacher.num_classes, student_k)
            t_names = getattr(teacher.model, "class_names", None)
            s_names = self.bundle.class_names if self.bundle is not None else None
            if t_names is not None and s_names is not None and list(t_names) != list(s_names):
                raise ConfigError(
                    f"distill.teacher={spec!r} was trained on classes {list(t_names)}, the "
                    f"student's data has {list(s_names)}: the teacher must be trained on the "
                    "same classes, in the same order"
                )
            self.teacher = teacher
        if model_device(self.teacher.model) != device:
            self.teacher.model.to(device)
        return self.teacher

    def _check_teacher_classes(self, teacher_k: int, student_k: int) -> None:
        if teacher_k != student_k:
            raise ConfigError(
                f"distill.teacher={self.cfg.distill.teacher!r} predicts {teacher_k} classes but "
                f"the student has {student_k}: train the teacher on the same data"
            )

    def training_step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        """The loss and its detached parts (``loss`` carries the graph):

        - plain model: ``{"loss", "acc1"}``;
        - auxiliary heads (GoogLeNet): ``{"loss", "loss_main", "loss_aux1", ..., "acc1"}``;
        - distillation (``distill.type`` soft/hard): ``{"loss", "loss_cls", "loss_distill",
          "acc1"}`` (plus ``loss_aux*`` for other auxiliary heads);
        - a DeiT [distill] head without a teacher: ``{"loss", "loss_cls", "loss_head_dist",
          "acc1"}``.

        ``acc1`` (of the main / [CLS] head) is left out under mixup/cutmix, where the targets
        are mixtures of two labels."""
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
        # A DeiT [distill] head is aux[0] of a model built with distilled=True; any other aux
        # output (GoogLeNet's side classifiers) is an auxiliary label head.
        has_dist_head = bool(aux) and getattr(unwrap(model), "distilled", False) is True
        dist_logits = aux[0] if has_dist_head else None
        other_aux = aux[1:] if has_dist_head else aux
        parts: dict[str, Tensor] = {}
        d = self.cfg.distill
        if d.type != "none":
            teacher = self._teacher_for(model, images.device)
            t_logits = teacher.logits(x, *self._normalization())  # (N, K), no graph
            if t_logits.dim() != 2 or t_logits.shape[1] != logits.shape[1]:
                self._check_teacher_classes(t_logits.shape[-1], logits.shape[1])
            student = dist_logits if dist_logits is not None else logits
            loss_kd = distillation_loss(student, t_logits, d.type, d.tau)
            loss = (1.0 - d.alpha) * loss_main + d.alpha * loss_kd
            parts["loss_cls"] = loss_main.detach()
            parts["loss_distill"] = loss_kd.detach()
        elif dist_logits is not None:
            # No teacher: the [distill] token is a second [CLS] token (module docstring).
            loss_head_dist = F.cross_entropy(dist_logits, targets, label_smoothing=smoothing)
            loss = 0.5 * (loss_main + loss_head_dist)
            parts["loss_cls"] = loss_main.detach()
            parts["loss_head_dist"] = loss_head_dist.detach()
        else:
            loss = loss_main
            if other_aux:
                parts["loss_main"] = loss_main.detach()
        if other_aux:
            aux_losses = [F.cross_entropy(a, targets, label_smoothing=smoothing) for a in other_aux]
            loss = loss + self.cfg.loss.aux_weight * torch.stack(aux_losses).sum()
            for i, part in enumerate(aux_losses, start=1):
                parts[f"loss_aux{i}"] = part.detach()
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
        """See :func:`render_topk`."""
        return render_topk(image, prediction)


def upscale_for_display(img: Image.Image, min_side: int = _RENDER_MIN_SIDE) -> Image.Image:
    """``img`` scaled up by an integer factor (nearest-neighbour) until its short side is at
    least ``min_side``: every source pixel becomes an equal square block. Larger images are
    returned as they are."""
    w, h = img.size
    if min(w, h) >= min_side:
        return img
    s = math.ceil(min_side / max(1, min(w, h)))
    return img.resize((w * s, h * s), Image.Resampling.NEAREST)


def render_topk(image: Image.Image, prediction: dict[str, Any]) -> Image.Image:
    """The image (tiny ones scaled up by an integer factor, nearest-neighbour, to a short
    side of at least 256 px) above a band listing the top-k labels with bars for their
    probabilities."""
    img = upscale_for_display(image.convert("RGB"))
    w, h = img.size

    entries = prediction.get("topk", [])
    lines = [
        f"{r + 1}. {e.get('label', e.get('index', '?'))}  {100 * float(e.get('prob', 0)):.1f}%"
        for r, e in enumerate(entries)
    ]
    probs = [float(e.get("prob", 0.0)) for e in entries]
    if prediction.get("caption"):  # a generated caption, wrapped to the image's width
        words, line = str(prediction["caption"]).split(), ""
        wrapped = []
        for word in words:
            if line and len(line) + 1 + len(word) > max(12, w // 9):
                wrapped.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        wrapped.append(line)
        lines = wrapped + lines
        probs = [0.0] * len(wrapped) + probs
    if not lines:
        lines, probs = ["(no prediction)"], [0.0]

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
