"""Pictures of a run: loss, accuracy and learning-rate curves, and the confusion matrix.

Figures are drawn on matplotlib's ``Figure`` object directly (saved through the Agg canvas)
rather than through ``pyplot``: no global backend switch, no figure registry to leak, and safe
to call from a training process with no display. matplotlib is imported inside the functions so
that importing visionzoo stays fast.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_curves", "plot_confusion_matrix"]

_DPI = 120


def _number(v: Any) -> float | None:
    """A finite float, or None for missing, non-numeric, boolean or non-finite values."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _series(rows: list[dict[str, Any]], key: str, xkey: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the rows holding a finite ``key`` and ``xkey``, sorted by x.

    A repeated x (rows logged twice around a resume) keeps the last value.
    """
    points: dict[float, float] = {}
    for row in rows:
        x, y = _number(row.get(xkey)), _number(row.get(key))
        if x is not None and y is not None:
            points[x] = y
    xs = np.array(sorted(points), dtype=float)
    return xs, np.array([points[x] for x in xs], dtype=float)


def _x_key(rows: list[dict[str, Any]], keys: Sequence[str]) -> str:
    """``step`` when every row carrying one of ``keys`` has it, else ``epoch``."""
    relevant = [r for r in rows if any(_number(r.get(k)) is not None for k in keys)]
    if all(_number(r.get("step")) is not None for r in relevant):
        return "step"
    return "epoch"


def _smooth(y: np.ndarray) -> np.ndarray | None:
    """A centred moving average for long, noisy per-step series (None when short)."""
    n = len(y)
    if n < 50:
        return None
    w = max(3, n // 50)
    kernel = np.ones(w) / w
    # Normalise by the kernel mass actually inside the series so the ends are not pulled to 0.
    return np.convolve(y, kernel, mode="same") / np.convolve(np.ones(n), kernel, mode="same")


def _new_figure(figsize: tuple[float, float]):
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=_DPI, layout="constrained")


def _line_plot(
    rows: list[dict[str, Any]],
    keys: list[str],
    path: Path,
    title: str,
    ylabel: str,
    scale: float = 1.0,
) -> Path | None:
    xkey = _x_key(rows, keys)
    fig = _new_figure((7.0, 4.2))
    ax = fig.add_subplot()
    drawn = 0
    for key in keys:
        x, y = _series(rows, key, xkey)
        if len(x) == 0:
            continue
        y = y * scale
        smooth = _smooth(y)
        marker = "o" if len(x) <= 30 else None
        if smooth is not None:
            # Raw values faint behind their trend.
            (line,) = ax.plot(x, y, alpha=0.25, linewidth=0.8)
            ax.plot(x, smooth, color=line.get_color(), linewidth=1.6, label=key)
        else:
            ax.plot(x, y, marker=marker, markersize=3, linewidth=1.4, label=key)
        drawn += 1
    if not drawn:
        return None
    ax.set_xlabel(xkey)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _keys_like(rows: list[dict[str, Any]], prefixes: tuple[str, ...]) -> list[str]:
    """Every key starting with one of ``prefixes``, in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        for k in row:
            if k.startswith(prefixes):
                seen.setdefault(k, None)
    return list(seen)


def plot_curves(metrics_rows: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write ``loss.png``, ``accuracy.png`` and ``lr.png`` (those with data) into ``out_dir``.

    ``metrics_rows`` are metrics.jsonl rows: ``step``, ``epoch`` and keys such as
    ``train/loss``, ``train/loss_aux1``, ``train/lr``, ``val/loss``, ``val/acc1``; any key may
    be missing from any row and None/NaN values are skipped. Accuracies (fractions) are drawn
    in percent. Returns the paths written.
    """
    out = Path(out_dir)
    rows = [r for r in metrics_rows if isinstance(r, dict)]
    written: list[Path] = []

    loss_keys = _keys_like(rows, ("train/loss", "val/loss"))
    acc_keys = [k for k in ("val/acc1", "val/acc5", "train/acc1") if any(k in r for r in rows)]
    lr_keys = _keys_like(rows, ("train/lr",))
    for keys, name, title, ylabel, scale in (
        (loss_keys, "loss.png", "Loss", "loss", 1.0),
        (acc_keys, "accuracy.png", "Accuracy", "accuracy (%)", 100.0),
        (lr_keys, "lr.png", "Learning rate", "learning rate", 1.0),
    ):
        if keys:
            p = _line_plot(rows, keys, out / name, title, ylabel, scale)
            if p is not None:
                written.append(p)
    return written


def plot_confusion_matrix(
    cm: Any, class_names: Sequence[str] | None, path: str | Path, title: str = "Confusion matrix"
) -> Path:
    """Write the confusion matrix ``cm`` (``[K, K]``, rows true class, columns predicted) as a
    PNG: colours are row-normalised (each true class's share, so rare classes read as clearly
    as common ones), cells show the raw counts (up to 30 classes; beyond that they would not
    fit). ``class_names`` of the wrong length (or None) fall back to indices."""
    if hasattr(cm, "detach"):  # torch.Tensor
        cm = cm.detach().cpu().numpy()
    counts = np.asarray(cm)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be square [K, K], got shape {counts.shape}")
    k = counts.shape[0]
    names = (
        [str(n) for n in class_names]
        if class_names is not None and len(class_names) == k
        else [str(i) for i in range(k)]
    )
    support = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, support, out=np.zeros(counts.shape, float), where=support > 0)

    side = min(16.0, max(4.5, 0.45 * k + 2.5))
    fig = _new_figure((side + 1.0, side))
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    if k <= 50:
        ax.set_xticks(range(k), labels=names, rotation=90 if k > 8 else 45, ha="right")
        ax.set_yticks(range(k), labels=names)
        ax.tick_params(labelsize=8 if k > 15 else 10)
    if k <= 30:
        for i, j in itertools.product(range(k), range(k)):
            ax.text(
                j,
                i,
                str(int(counts[i, j])),
                ha="center",
                va="center",
                fontsize=8 if k > 12 else 10,
                color="white" if share[i, j] > 0.5 else "black",
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p)
    return p
