"""Parameters, multiply-accumulates (MACs) and FLOPs of a model on one input size.

Counts come from :class:`torch.utils.flop_counter.FlopCounterMode`, which attributes every
matrix product (convolutions, linear layers, ``matmul``/``bmm`` and scaled-dot-product
attention) to the modules that ran it; there are no hand-written per-layer tables.
Element-wise work (activations, normalisation, pooling, additions) is not counted, which is
the convention of the papers' "FLOPs" / "multiply-adds" figures: ResNet-50 (arXiv:1512.03385)
reports 3.8e9, i.e. multiply-adds of its convolutions and classifier. FLOPs here are
``2 * MACs``: one multiply and one add per accumulate.

The forward pass runs on the ``meta`` device whenever possible: meta tensors carry shapes but
no data, so profiling VGG-16 at 224x224 costs milliseconds and no memory. A model that cannot
run on meta tensors (an op without a meta kernel, a data-dependent branch such as ``.item()``)
is run once on real tensors instead. On real tensors the fused attention kernels (CPU flash
attention, the ``nn.MultiheadAttention`` fast path) are invisible to the counter, so the
profiler selects the math implementations, which are what the meta run counts too.

Shapes: N batch, C channels, H x W spatial size; ``input_size`` is (C, H, W).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ModelArgumentError, VisionZooError

__all__ = ["Profile", "StageRow", "profile"]

# Row name for work done by the root module itself (ops in its own forward, its own
# parameters such as ViT's [CLS] token), so that rows always sum to the totals.
OTHER_ROW = "(other)"


@dataclass(frozen=True)
class StageRow:
    """One top-level child of the profiled model."""

    name: str
    params: int
    macs: int
    # Shape of the child's output (last call); None when it was not called directly
    # (e.g. an nn.ModuleList iterated by the parent) or for the OTHER_ROW.
    output_shape: Any = None


@dataclass(frozen=True)
class Profile:
    """What :func:`profile` measured. ``flops == 2 * macs``; counts are for the whole batch."""

    name: str
    input_size: tuple[int, int, int]
    batch_size: int
    params: int
    trainable_params: int
    macs: int
    flops: int
    # Tensor shape as a tuple; a tuple/list output gives a list of those, a dict a dict.
    output_shape: Any
    # Input H / H of ``forward_features``' output when that is a 4-D map, else None.
    output_stride: float | None
    rows: list[StageRow] = field(default_factory=list)
    # Where the forward pass ran: "meta" (shapes only) or the real device.
    counted_on: str = "meta"

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary (tuples become lists when dumped)."""
        return asdict(self)

    def table(self) -> str:
        """Aligned text: the totals, then one row per top-level child."""
        c, h, w = self.input_size
        head = [
            ("model", self.name),
            ("input", f"{self.batch_size}x{c}x{h}x{w}"),
            ("params", f"{self.params:,} ({self.params / 1e6:.2f} M)"),
            ("trainable params", f"{self.trainable_params:,}"),
            ("MACs", f"{self.gmacs:.3f} G"),
            ("FLOPs", f"{self.gflops:.3f} G"),
            ("output shape", format_shape(self.output_shape)),
            ("output stride", format_stride(self.output_stride)),
        ]
        width = max(len(k) for k, _ in head)
        lines = [f"{k:<{width}}  {v}" for k, v in head]
        if self.rows:
            total = self.macs or 1
            table_rows = [
                [
                    r.name,
                    f"{r.params:,}",
                    f"{r.macs / 1e6:,.1f}",
                    f"{100 * r.macs / total:.1f}",
                    format_shape(r.output_shape),
                ]
                for r in self.rows
            ]
            lines.append("")
            lines.append(
                format_table(
                    ["stage", "params", "MMACs", "%MACs", "output shape"],
                    table_rows,
                    align="lrrrl",
                )
            )
        return "\n".join(lines)


def format_shape(shape: Any) -> str:
    """``(1, 1000)`` -> ``1x1000``; nested outputs as ``[1x1000, 1x10]``; None -> ``-``."""
    if shape is None:
        return "-"
    if isinstance(shape, tuple) and all(isinstance(s, int) for s in shape):
        return "x".join(str(s) for s in shape) if shape else "scalar"
    if isinstance(shape, Mapping):
        return "{" + ", ".join(f"{k}: {format_shape(v)}" for k, v in shape.items()) + "}"
    if isinstance(shape, (list, tuple)):
        return "[" + ", ".join(format_shape(s) for s in shape) + "]"
    return str(shape)


def format_stride(stride: float | None) -> str:
    if stride is None:
        return "-"
    return str(int(stride)) if float(stride).is_integer() else f"{stride:.2f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """Aligned plain-text table; ``align`` has one ``l``/``r`` per column (default ``l``)."""
    cols = len(headers)
    widths = [max([len(headers[i])] + [len(r[i]) for r in rows]) for i in range(cols)]
    align = align.ljust(cols, "l")

    def line(cells: Sequence[str]) -> str:
        out = [
            f"{cell:>{wd}}" if a == "r" else f"{cell:<{wd}}"
            for cell, wd, a in zip(cells, widths, align, strict=True)
        ]
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * wd for wd in widths)
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


# --------------------------------------------------------------------------- helpers


def _check_input_size(input_size: object) -> tuple[int, int, int]:
    if isinstance(input_size, (str, bytes)) or not isinstance(input_size, Sequence):
        raise ModelArgumentError(
            f"input_size must be a sequence (C, H, W) of 3 positive integers, got {input_size!r}"
        )
    size = tuple(input_size)
    if len(size) != 3 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size
    ):
        raise ModelArgumentError(
            f"input_size must be (C, H, W): 3 positive integers, got {input_size!r}"
        )
    return size  # type: ignore[return-value]


def _shape_of(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return tuple(obj.shape)
    if isinstance(obj, Mapping):
        return {str(k): _shape_of(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_shape_of(v) for v in obj]
    return None


def _unique_numel(params: Iterator[nn.Parameter]) -> tuple[int, int]:
    """(total, trainable) element counts; tied parameters are counted once."""
    seen: set[int] = set()
    total = trainable = 0
    for p in params:
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return total, trainable


def _meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers live on ``meta`` (no data copied).

    Pre-seeding deepcopy's memo with meta tensors keeps the copy cheap for huge models and
    leaves the caller's module untouched.
    """
    memo: dict[int, Any] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        if id(t) in memo:
            continue
        meta = torch.empty_like(t, device="meta")
        if isinstance(t, nn.Parameter):
            meta = nn.Parameter(meta, requires_grad=t.requires_grad)
        memo[id(t)] = meta
    return copy.deepcopy(model, memo)


@contextlib.contextmanager
def _countable_attention() -> Iterator[None]:
    """Route attention through kernels the flop counter sees.

    The fused CPU flash-attention op and nn.MultiheadAttention's fast path are not in
    FlopCounterMode's registry; the math backend decomposes into counted ``bmm`` calls,
    exactly what the meta device runs.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode; restore each one's own flag afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@dataclass
class _Run:
    macs_by_module: dict[str, int]
    total_macs: int
    output_shape: Any
    stage_shapes: dict[str, Any]
    feature_shape: tuple[int, ...] | None


def _forward_counted(model: nn.Module, x: Tensor) -> _Run:
    """One forward pass of ``model`` (already in eval mode) under the flop counter."""
    stage_shapes: dict[str, Any] = {}
    handles = []
    for name, child in model.named_children():

        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            stage_shapes[name] = _shape_of(out)

        handles.append(child.register_forward_hook(hook))

    # Record forward_features' output on the way through instead of running it twice.
    features: list[Any] = []
    original = getattr(model, "forward_features", None)
    patched = False
    if callable(original) and "forward_features" not in vars(model):

        def forward_features(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            features.append(out)
            return out

        try:
            model.forward_features = forward_features  # instance attribute shadows the method
            patched = True
        except (AttributeError, TypeError):  # e.g. a scripted module: call it separately
            pass
    try:
        with torch.no_grad(), _countable_attention(), FlopCounterMode(display=False) as counter:
            out = model(x)
        if callable(original) and not features:
            # forward did not go through forward_features (e.g. a custom forward).
            with torch.no_grad(), _countable_attention():
                features.append(original(x))
    finally:
        for h in handles:
            h.remove()
        if patched:
            del model.forward_features

    counts = counter.get_flop_counts()
    macs_by_module = {k: sum(v.values()) // 2 for k, v in counts.items()}
    feature_shape = None
    if features and isinstance(features[-1], Tensor):
        feature_shape = tuple(features[-1].shape)
    return _Run(
        macs_by_module=macs_by_module,
        total_macs=counter.get_total_flops() // 2,
        output_shape=_shape_of(out),
        stage_shapes=stage_shapes,
        feature_shape=feature_shape,
    )


def _stage_macs(macs_by_module: Mapping[str, int], prefix: str) -> int:
    """MACs of the module named ``prefix``, or of its outermost called descendants.

    A container that is never called itself (an nn.ModuleList iterated by its parent) has no
    entry of its own; its called descendants do.
    """
    if prefix in macs_by_module:
        return macs_by_module[prefix]
    keys = [k for k in macs_by_module if k.startswith(prefix + ".")]
    outer = [k for k in keys if not any(k.startswith(o + ".") for o in keys if o != k)]
    return sum(macs_by_module[k] for k in outer)


def _model_dtype(model: nn.Module) -> torch.dtype:
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def _model_device(model: nn.Module, default: torch.device) -> torch.device:
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t.device
    return default


def _build(name: str, kwargs: Mapping[str, Any], device: torch.device) -> nn.Module:
    from ..registry import create_model

    with torch.device(device):
        return create_model(name, **kwargs)


# --------------------------------------------------------------------------- API


def profile(
    model: nn.Module | str,
    input_size: Sequence[int] | None = None,
    *,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    use_meta: bool = True,
    model_kwargs: Mapping[str, Any] | None = None,
) -> Profile:
    """Count parameters, MACs and FLOPs (``2 * MACs``) of one forward pass.

    Args:
        model: a module, or a registered name built with ``create_model(model, **model_kwargs)``.
        input_size: (C, H, W). None: the registry entry's default for a name, 3x224x224 for a
            module.
        batch_size: N of the input; counts are for the whole batch.
        device: where real tensors run when the meta device cannot be used (``use_meta=False``
            or an op without a meta kernel). A module whose weights already live on a device
            runs there; ``device`` then only places modules without parameters.
        use_meta: try the shape-only ``meta`` device first (default). Real tensors give the
            same counts; False forces them.
        model_kwargs: builder switches when ``model`` is a name.

    The model runs in eval mode under ``torch.no_grad()``; a module passed in keeps its
    weights and has its train/eval flags restored. Raises ModelArgumentError for a bad
    ``input_size`` or ``batch_size``, or when the model cannot run on that input.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ModelArgumentError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = torch.device(device)
    kwargs = dict(model_kwargs or {})
    if isinstance(model, str):
        from ..registry import get_model_entry

        entry = get_model_entry(model)
        size = _check_input_size(entry.input_size if input_size is None else input_size)
        name = model
        module: nn.Module | None = None
    elif isinstance(model, nn.Module):
        if kwargs:
            raise ModelArgumentError("model_kwargs is only used when model is a registered name")
        size = _check_input_size((3, 224, 224) if input_size is None else input_size)
        name = type(model).__name__
        module = model
    else:
        raise ModelArgumentError(
            f"model must be an nn.Module or a registered name, got {type(model).__name__}"
        )
    shape = (batch_size, *size)

    def on_meta(target: nn.Module) -> _Run | None:
        try:
            target.eval()
            x = torch.empty(shape, dtype=_model_dtype(target), device="meta")
            return _forward_counted(target, x)
        except VisionZooError:
            raise
        except Exception:  # an op without a meta kernel, or a data-dependent branch
            return None

    run: _Run | None = None
    counted_on = "meta"
    meta_failed = not use_meta
    if use_meta and module is None:
        # Building on meta skips weight initialisation: instant even for VGG-16. A builder
        # that reads tensor values (``.tolist()``) cannot, and is built for real below.
        try:
            meta_model = _build(name, kwargs, torch.device("meta"))
        except VisionZooError:
            raise
        except Exception:
            meta_model = None
        if meta_model is not None:
            run = on_meta(meta_model)
            meta_failed = run is None
            if run is not None:
                module = meta_model  # same parameter shapes as a real build
    if module is None:
        module = _build(name, kwargs, device)
    if run is None and not meta_failed:
        try:
            run = on_meta(_meta_copy(module))
        except VisionZooError:
            raise
        except Exception:  # a module deepcopy cannot copy
            run = None
    if run is None:
        run_device = _model_device(module, device)
        generator = torch.Generator().manual_seed(0)  # leave the global RNG alone
        x = torch.randn(shape, generator=generator, dtype=_model_dtype(module)).to(run_device)
        with _eval_mode(module):
            try:
                run = _forward_counted(module, x)
            except VisionZooError:
                raise
            except RuntimeError as e:
                raise ModelArgumentError(
                    f"{name} cannot run on an input of size {'x'.join(map(str, shape))}: {e}"
                ) from e
        counted_on = str(run_device)

    params, trainable = _unique_numel(module.parameters())
    root = type(module).__name__
    rows = []
    for child_name, child in module.named_children():
        child_params, _ = _unique_numel(child.parameters())
        rows.append(
            StageRow(
                name=child_name,
                params=child_params,
                macs=_stage_macs(run.macs_by_module, f"{root}.{child_name}"),
                output_shape=run.stage_shapes.get(child_name),
            )
        )
    other_params = params - sum(r.params for r in rows)
    other_macs = run.total_macs - sum(r.macs for r in rows)
    if other_params > 0 or other_macs > 0:
        rows.append(StageRow(OTHER_ROW, max(other_params, 0), max(other_macs, 0)))

    output_stride: float | None = None
    if run.feature_shape is not None and len(run.feature_shape) == 4 and run.feature_shape[2] > 0:
        ratio = size[1] / run.feature_shape[2]
        output_stride = int(ratio) if ratio.is_integer() else ratio

    return Profile(
        name=name,
        input_size=size,
        batch_size=batch_size,
        params=params,
        trainable_params=trainable,
        macs=run.total_macs,
        flops=2 * run.total_macs,
        output_shape=run.output_shape,
        output_stride=output_stride,
        rows=rows,
        counted_on=counted_on,
    )
