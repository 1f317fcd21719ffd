"""Where a classifier looks: attention rollout for vision transformers, Grad-CAM for CNNs.

* :func:`attention_rollout` — Abnar & Zuidema, "Quantifying Attention Flow in Transformers",
  arXiv:2005.00928, §3. Raw attention of one layer says little about what reaches the output,
  because every layer mixes tokens again and the residual connections carry each token forward.
  Rollout models both: per layer the heads' attention matrices are fused (mean by default), the
  identity is added for the residual path and rows are renormalised,
  ``A_l = norm(W_l + I)`` (= ``0.5 W_l + 0.5 I`` when the fused rows sum to 1, the paper's
  form), and the layers are chained, ``R = A_L ... A_2 A_1``. Row ``R[0]`` says how much of the
  final [CLS] token comes from each input token; its patch entries, reshaped to the patch grid,
  are the map.

  Departures and choices (each also marked where it happens):

  - ``head_fusion`` "max" / "min" and ``discard_ratio`` (zero the weakest fraction of each fused
    layer before adding the identity) are not in the paper; they come from J. Gildenblat's
    widely used rollout for ViT, which found that they sharpen maps of trained models. The
    defaults ("mean", 0.0) are the paper's method.
  - Distilled DeiT models have two prefix tokens, [CLS] and [distill]. The map is rolled out from
    [CLS] (the head trained on the labels); the [distill] token's attention is part of every
    layer's matrix, so its influence on [CLS] is included. The map covers patch tokens only.
  - ``class_token=False`` models classify the mean of the final patch tokens (global average
    pooling), so the map is the mean of the patch tokens' rows of ``R``.
  - The map is returned unnormalised (a patch's share of the [CLS] token's input attribution, in
    units where the whole row sums to 1 including the prefix tokens); :func:`overlay` stretches
    it to [0, 1] for display.

* :func:`grad_cam` — Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization", arXiv:1610.02391, §3, Eq. 1-2: the gradient of the target class
  score ``y^c`` (the logit, before softmax) with respect to a convolutional feature map ``A`` is
  averaged over the map's positions to weigh its channels, ``alpha_k = mean_ij dy^c/dA^k_ij``,
  and ``ReLU(sum_k alpha_k A^k)`` is the map. It is divided by its maximum so it lies in [0, 1]
  (an all-zero map stays zero). The layer defaults to the one producing the feature map that
  ``forward_features`` returns (:func:`default_gradcam_layer`): ResNet ``layer4``, VGG / AlexNet /
  MobileNet ``features``, GoogLeNet ``inception5b``.

* :func:`overlay` draws a map over an image; :func:`explain` runs the whole thing for one PIL
  image the way the model saw its validation images in training (the run's eval transform and
  normalisation, read from ``model.visionzoo_config`` that ``engine.checkpoint.load_model``
  attaches).

Shapes: N images, H x W input, L tokens = T prefix tokens + h*w patches, heads Hh, C channels,
h x w the patch grid (rollout) or the feature map (Grad-CAM), K classes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn

from ..errors import ConfigError, did_you_mean
from ..layers.transformer import Attention
from ..models.classification.vit import VisionTransformer
from ..models.outputs import AuxOutput

__all__ = [
    "METHODS",
    "HEAD_FUSIONS",
    "attention_rollout",
    "rollout_attentions",
    "capture_attention",
    "grad_cam",
    "default_gradcam_layer",
    "overlay",
    "explain",
]

METHODS = ("auto", "rollout", "gradcam")
HEAD_FUSIONS = ("mean", "max", "min")

# explain(): tiny inputs (32 px shapes, 8 px digits) are scaled up to at least this short side.
_MIN_SIDE = 256


# --- helpers ---------------------------------------------------------------------------------


def _logits(out: Any) -> Tensor:
    # Eval mode gives plain logits; AuxOutput only if a model ignores eval mode.
    return out.logits if isinstance(out, AuxOutput) else out


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    # Explanations are of the inference function: no dropout, BatchNorm running statistics,
    # no auxiliary heads (GoogLeNet, DeiT's training-mode AuxOutput).
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_images(images: Any) -> Tensor:
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ConfigError(f"images must be a float Tensor[N, C, H, W], got {shape}")
    return images


def _check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ConfigError(
            f"{name}={value!r} is not valid{did_you_mean(str(value), choices)}; "
            f"choose one of {', '.join(choices)}"
        )
    return str(value)


def _check_discard_ratio(value: object) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or math.isnan(float(value)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"discard_ratio must be a number in [0, 1), got {value!r}")
    return float(value)


def _check_target(target: object, num_classes: int) -> int | None:
    if target is None:
        return None
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < num_classes:
        raise ConfigError(
            f"target={target!r} is not a class index of this model (0..{num_classes - 1})"
        )
    return target


# --- attention rollout -----------------------------------------------------------------------


@contextlib.contextmanager
def capture_attention(modules: Sequence[Attention]) -> Iterator[Sequence[Attention]]:
    """Switch ``capture_attn`` on for ``modules`` (each then keeps ``attn_probs`` after a
    forward pass); flags and stored matrices are restored / dropped on exit."""
    before = [m.capture_attn for m in modules]
    for m in modules:
        m.capture_attn, m.attn_probs = True, None
    try:
        yield modules
    finally:
        for m, flag in zip(modules, before, strict=True):
            m.capture_attn, m.attn_probs = flag, None


def rollout_attentions(
    attentions: Sequence[Tensor],
    grid_size: tuple[int, int],
    num_prefix_tokens: int = 1,
    class_token: bool = True,
    discard_ratio: float = 0.0,
    head_fusion: str = "mean",
) -> Tensor:
    """Attention rollout of per-layer attention matrices (first layer first).

    Args:
        attentions: one Tensor[N, Hh, L, L] per layer (rows sum to 1), ``L = T + h*w``.
        grid_size: the patch grid (h, w).
        num_prefix_tokens: T, tokens before the patches ([CLS], [distill]).
        class_token: roll out from token 0 ([CLS]); False: the mean of the patch tokens' rows
            (the global-average-pooling head).
        discard_ratio: fraction of each fused layer's weakest entries set to zero before the
            identity is added (not in the paper; module docstring).
        head_fusion: how heads are fused: "mean" (the paper), "max" or "min".

    Returns Tensor[N, h, w] (float32), unnormalised.
    """
    head_fusion = _check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    discard_ratio = _check_discard_ratio(discard_ratio)
    if not attentions:
        raise ConfigError("attention rollout needs at least one layer's attention")
    n, _, length, _ = attentions[0].shape
    h, w = grid_size
    prefix = num_prefix_tokens
    if length != prefix + h * w:
        raise ConfigError(
            f"attention over {length} tokens does not match {prefix} prefix token(s) and a "
            f"{h}x{w} patch grid"
        )
    eye = torch.eye(length, device=attentions[0].device)
    rollout = eye.expand(n, length, length)
    for probs in attentions:
        probs = probs.float()
        if head_fusion == "mean":
            a = probs.mean(dim=1)  # (N, Hh, L, L) -> (N, L, L)
        elif head_fusion == "max":
            a = probs.amax(dim=1)
        else:
            a = probs.amin(dim=1)
        if discard_ratio > 0:
            # Departure (Gildenblat's rollout): drop the weakest entries of the layer.
            flat = a.reshape(n, -1).clone()  # (N, L*L)
            k = int(flat.shape[1] * discard_ratio)
            if k > 0:
                weakest = flat.topk(k, dim=1, largest=False).indices
                flat.scatter_(1, weakest, 0.0)
            a = flat.view(n, length, length)
        # Residual path: A = norm(W + I), the paper's 0.5 W + 0.5 I when rows of W sum to 1.
        a = a + eye
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a @ rollout  # R_l = A_l R_{l-1}: (N, L, L)
    if class_token:
        cam = rollout[:, 0, prefix:]  # the [CLS] row over the patches: (N, h*w)
    else:
        cam = rollout[:, prefix:, prefix:].mean(dim=1)  # mean of the patch rows: (N, h*w)
    return cam.reshape(n, h, w)  # (N, h*w) -> (N, h, w)


def _vit_blocks_attention(model: nn.Module) -> list[Attention]:
    if not isinstance(model, VisionTransformer):
        raise ConfigError(
            f"attention rollout needs a vision transformer (ViT/DeiT); {type(model).__name__} "
            "has no self-attention layers: use method 'gradcam' (--method gradcam) for CNNs"
        )
    return [block.attn for block in model.blocks]


def _rollout(
    model: nn.Module, images: Tensor, discard_ratio: float, head_fusion: str
) -> tuple[Tensor, Tensor]:
    """(map Tensor[N, h, w], logits Tensor[N, K]) from one forward pass."""
    modules = _vit_blocks_attention(model)
    images = _check_images(images)
    head_fusion = _check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
    discard_ratio = _check_discard_ratio(discard_ratio)
    grid = model.patch_embed.grid_size(images.shape[-2], images.shape[-1])
    with _eval_mode(model), torch.no_grad(), capture_attention(modules):
        logits = _logits(model.forward_head(model.forward_features(images)))
        attentions = [m.attn_probs for m in modules]  # each (N, Hh, L, L)
        cam = rollout_attentions(
            attentions,
            grid,
            num_prefix_tokens=model.num_prefix_tokens,
            class_token=model.class_token,
            discard_ratio=discard_ratio,
            head_fusion=head_fusion,
        )
    return cam, logits.float()


def attention_rollout(
    model: nn.Module,
    images: Tensor,
    discard_ratio: float = 0.0,
    head_fusion: str = "mean",
) -> Tensor:
    """Attention rollout (arXiv:2005.00928) of a ViT/DeiT for ``images`` Tensor[N, 3, H, W]
    (normalised as the model expects); returns Tensor[N, h, w] on the patch grid (module
    docstring: [CLS] row, [distill] token, average-pooled models, no normalisation).

    Runs in eval mode (the model's mode is restored) and without gradients.

    Raises:
        ConfigError: ``model`` is not a VisionTransformer (use :func:`grad_cam`), a bad
            ``head_fusion`` or ``discard_ratio``.
    """
    return _rollout(model, images, discard_ratio, head_fusion)[0]


# --- Grad-CAM --------------------------------------------------------------------------------


def _module_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if name]


def _layer_hint(model: nn.Module, name: str) -> str:
    names = _module_names(model)
    top = [n for n, _ in model.named_children()]
    shown = ", ".join(top[:12]) + (", ..." if len(top) > 12 else "")
    nested = next((n for n in reversed(names) if "." in n), None)
    example = f" (nested ones dotted, e.g. {nested})" if nested else ""
    return f"{did_you_mean(name, names)}; valid names include {shown}{example}"


def _resolve_layer(model: nn.Module, layer: nn.Module | str) -> tuple[str, nn.Module]:
    if isinstance(layer, str):
        try:
            return layer, model.get_submodule(layer)
        except AttributeError:
            raise ConfigError(
                f"layer {layer!r} is not a module of {type(model).__name__}"
                + _layer_hint(model, layer)
            ) from None
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        raise ConfigError(f"layer {type(layer).__name__} is not a submodule of the model")
    raise ConfigError(f"layer must be a module or a dotted module name, got {layer!r}")


def default_gradcam_layer(model: nn.Module, images: Tensor) -> str:
    """The dotted name of the layer Grad-CAM uses by default.

    One forward pass of ``images`` (no gradients, eval mode) records every module's output.
    The rule: the shallowest module whose output *is* the 4-D feature map that
    ``forward_features`` returns (ResNet ``layer4``, VGG ``features``, GoogLeNet
    ``inception5b``); for a model without ``forward_features`` (or whose features are computed
    by a function after the last module), the last top-level child with a 4-D output, maps
    larger than 1x1 preferred (a global pool's 1x1 output has nothing to localise).

    Raises:
        ConfigError: ``forward_features`` gives no 4-D map, or no module produces one (a
            transformer: use attention rollout).
    """
    images = _check_images(images)
    seen: list[tuple[str, Tensor]] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            if isinstance(out, Tensor) and out.ndim == 4:
                seen.append((name, out))

        handles.append(module.register_forward_hook(hook))
    try:
        with _eval_mode(model), torch.no_grad():
            has_features = callable(getattr(model, "forward_features", None))
            features = model.forward_features(images) if has_features else model(images)
    finally:
        for handle in handles:
            handle.remove()
    if has_features:
        if not isinstance(features, Tensor) or features.ndim != 4:
            shape = tuple(features.shape) if isinstance(features, Tensor) else "no tensor"
            raise ConfigError(
                f"{type(model).__name__} produces no 4-D feature map for Grad-CAM "
                f"(forward_features gives {shape}); for a vision transformer use method "
                "'rollout', or name a convolutional layer explicitly"
            )
        same = [name for name, out in seen if out is features]
        if same:
            return min(same, key=lambda n: n.count("."))  # min keeps the first of equal depth
    for pool in ([s for s in seen if "." not in s[0]], seen):
        if pool:
            spatial = [name for name, out in pool if out.shape[-2] * out.shape[-1] > 1]
            return (spatial or [name for name, _ in pool])[-1]
    raise ConfigError(
        f"{type(model).__name__} produces no 4-D feature map for Grad-CAM; for a vision "
        "transformer use method 'rollout'"
    )


def _grad_cam(
    model: nn.Module,
    images: Tensor,
    target: int | None,
    layer: nn.Module | str | None,
) -> tuple[Tensor, Tensor, str]:
    """(map Tensor[N, h, w], logits Tensor[N, K], layer name)."""
    images = _check_images(images)
    if layer is None:
        layer = default_gradcam_layer(model, images)
    name, module = _resolve_layer(model, layer)
    store: dict[str, Any] = {}

    def hook(_m: nn.Module, _i: Any, out: Any) -> Tensor | None:
        if not isinstance(out, Tensor) or out.ndim != 4:
            store["bad"] = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            return None
        # A leaf that requires grad: d(score)/dA exists even for a frozen model, and backward
        # stops here instead of running into the layers below.
        act = out.detach().requires_grad_(True)
        store["act"] = act
        return act

    handle = module.register_forward_hook(hook)
    # Gradients even when called under torch.no_grad(); the score must be built inside too.
    with torch.enable_grad():
        try:
            with _eval_mode(model):
                logits = _logits(model(images)).float()  # (N, K)
        finally:
            handle.remove()
        if "bad" in store or "act" not in store:
            what = f"output {store['bad']}" if "bad" in store else "no output in the forward pass"
            raise ConfigError(
                f"layer {name!r} gives {what}; Grad-CAM needs a layer with a 4-D feature map "
                f"Tensor[N, C, h, w]" + _layer_hint(model, name)
            )
        act: Tensor = store["act"]  # (N, C, h, w)
        target = _check_target(target, logits.shape[1])
        if target is None:
            index = logits.detach().argmax(dim=1)  # the predicted class
        else:
            index = torch.full((logits.shape[0],), target, device=logits.device)
        score = logits.gather(1, index[:, None]).sum()  # sum of y^c over the batch: ()
        # Images are independent in eval mode, so d(sum)/dA_n = dy^c_n/dA_n.
        (grad,) = torch.autograd.grad(score, act, allow_unused=True)
    if grad is None:
        raise ConfigError(f"layer {name!r} does not feed the classifier; pick a layer before it")
    weights = grad.mean(dim=(2, 3), keepdim=True)  # alpha_k (Eq. 1): (N, C, 1, 1)
    cam = F.relu((weights * act.detach()).sum(dim=1))  # Eq. 2: (N, h, w)
    peak = cam.amax(dim=(1, 2), keepdim=True)
    cam = torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny), cam)
    return cam.float(), logits.detach(), name


def grad_cam(
    model: nn.Module,
    images: Tensor,
    target: int | None = None,
    layer: nn.Module | str | None = None,
) -> Tensor:
    """Grad-CAM (arXiv:1610.02391) of a CNN for ``images`` Tensor[N, 3, H, W] (normalised as
    the model expects): Tensor[N, h, w] in [0, 1] at the chosen layer's resolution.

    ``target``: the class explained (default: each image's predicted class). ``layer``: a
    submodule or its dotted name (default: :func:`default_gradcam_layer`). Runs in eval mode
    (the model's mode is restored, so a GoogLeNet with auxiliary heads explains its main head).

    Raises:
        ConfigError: unknown layer (with valid names), a layer without a 4-D output, a target
            outside 0..K-1.
    """
    return _grad_cam(model, images, target, layer)[0]


# --- pictures --------------------------------------------------------------------------------


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # Pillow built without FreeType
        return ImageFont.load_default()


def overlay(
    image: Image.Image,
    heatmap: Tensor,
    label: str | None = None,
    prob: float | None = None,
    *,
    note: str | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> Image.Image:
    """``heatmap`` Tensor[h, w] stretched to [0, 1] (min to max; a constant map is all 0),
    upsampled bilinearly to the image size, coloured with matplotlib's ``cmap`` and blended
    over ``image`` with weight ``alpha``. With ``label`` (and ``prob``) or ``note``, a caption
    band below the picture shows them."""
    import matplotlib  # here: importing visionzoo stays fast

    if not isinstance(heatmap, Tensor) or heatmap.ndim != 2:
        shape = tuple(heatmap.shape) if isinstance(heatmap, Tensor) else type(heatmap).__name__
        raise ConfigError(f"heatmap must be a Tensor[h, w], got {shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha!r}")
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise ConfigError(f"unknown matplotlib colour map {cmap!r} (e.g. jet, inferno)") from None
    img = image.convert("RGB")
    w, h = img.size
    heat = heatmap.detach().float().cpu()
    heat = heat - heat.min()
    top = heat.max()
    heat = heat / top if top > 0 else heat
    heat = F.interpolate(heat[None, None], size=(h, w), mode="bilinear", align_corners=False)
    heat = heat[0, 0].clamp_(0, 1).numpy()  # (H, W) in [0, 1]
    colour = colormap(heat)[..., :3]  # (H, W, 3) floats in [0, 1]
    base = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)  # (H, W, 3)
    blended = (1 - alpha) * base + alpha * torch.from_numpy(colour).float()
    out = Image.fromarray((blended.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), "RGB")

    lines = []
    if label is not None:
        lines.append(f"{label}  {100 * prob:.1f}%" if prob is not None else str(label))
    if note:
        lines.append(note)
    if not lines:
        return out
    font_size = max(12, round(w / 24))
    font = _font(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [measure.textbbox((0, 0), line, font=font) for line in lines]
    pad = max(4, font_size // 3)
    line_h = max(b[3] for b in boxes) + pad
    canvas_w = max(w, max(b[2] for b in boxes) + 2 * pad)
    canvas = Image.new("RGB", (canvas_w, h + len(lines) * line_h + pad), (24, 24, 24))
    canvas.paste(out, ((canvas_w - w) // 2, 0))
    draw = ImageDraw.Draw(canvas)
    for r, line in enumerate(lines):
        draw.text(
            (pad, h + pad // 2 + r * line_h + pad // 2), line, fill=(255, 255, 255), font=font
        )
    return canvas


def _data_config(model: nn.Module) -> Any:
    from ..engine.config import DataConfig, config_from_dict

    cfg = getattr(model, "visionzoo_config", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("data"), dict):
        # Only the data section matters here: the transform and normalisation of training.
        return config_from_dict({"data": cfg["data"]}).data
    # A model that did not come from a checkpoint: its own size, ImageNet statistics.
    return DataConfig(image_size=int(getattr(model, "img_size", 224)))


def _class_name(model: nn.Module, index: int, num_classes: int) -> str:
    names = getattr(model, "class_names", None)
    if names is not None and len(names) == num_classes:
        return str(names[index])
    return str(index)


def explain(
    model: nn.Module,
    image: Image.Image,
    method: str = "auto",
    *,
    target: int | None = None,
    layer: nn.Module | str | None = None,
    discard_ratio: float = 0.0,
    head_fusion: str = "mean",
    cmap: str = "jet",
) -> tuple[Image.Image, dict[str, Any]]:
    """Explain one PIL image: (picture, facts).

    ``method`` "auto" picks attention rollout for a ViT/DeiT and Grad-CAM otherwise. The image
    goes through the run's eval transform (resize + centre crop to ``data.image_size``) and
    normalisation (``data.mean`` / ``data.std``) from ``model.visionzoo_config``, so the model
    sees what it saw in validation; a model without that config uses its ``img_size`` (or 224)
    and ImageNet statistics. The picture is that cropped image (scaled up by an integer factor
    to a short side of at least 256 px) with the map over it and a caption: the predicted
    class and probability, and for Grad-CAM the explained class.

    Facts: ``method``, ``prediction`` ``{"label", "index", "prob"}``, ``map_size`` [h, w], and
    for Grad-CAM ``layer`` and ``target`` ``{"label", "index", "prob"}``.

    Raises:
        ConfigError: a bad method, rollout on a CNN, ``target`` or ``layer`` given to rollout
            (which is class- and layer-agnostic), and what :func:`grad_cam` raises.
    """
    from ..data.transforms import eval_transform, normalize

    method = _check_choice("method", method, METHODS)
    is_vit = isinstance(model, VisionTransformer)
    if method == "auto":
        method = "rollout" if is_vit else "gradcam"
    if method == "rollout":
        _vit_blocks_attention(model)  # the CNN error first, before the option errors
        if target is not None:
            raise ConfigError(
                "target selects the class Grad-CAM explains; attention rollout is "
                "class-agnostic (use method 'gradcam' to explain a given class)"
            )
        if layer is not None:
            raise ConfigError("layer applies to Grad-CAM only; attention rollout uses every layer")

    data = _data_config(model)
    pixels = eval_transform(data)(image)  # uint8 (3, S, S): what the model sees
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    x = normalize(pixels[None].to(device), tuple(data.mean), tuple(data.std))  # (1, 3, S, S)

    facts: dict[str, Any] = {"method": method}
    if method == "rollout":
        cam, logits = _rollout(model, x, discard_ratio, head_fusion)
    else:
        cam, logits, facts["layer"] = _grad_cam(model, x, target, layer)
    probs = logits.softmax(dim=1)[0].cpu()  # (K,)
    k = probs.shape[0]
    pred = int(probs.argmax())
    facts["prediction"] = {
        "label": _class_name(model, pred, k),
        "index": pred,
        "prob": float(probs[pred]),
    }
    note = "attention rollout"
    if method == "gradcam":
        t = pred if target is None else int(target)
        facts["target"] = {"label": _class_name(model, t, k), "index": t, "prob": float(probs[t])}
        note = f"Grad-CAM of {facts['target']['label']} at {facts['layer']}"
    facts["map_size"] = [int(cam.shape[-2]), int(cam.shape[-1])]

    shown = Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")
    side = min(shown.size)
    if side < _MIN_SIDE:
        s = math.ceil(_MIN_SIDE / max(1, side))
        shown = shown.resize((shown.width * s, shown.height * s), Image.Resampling.NEAREST)
    picture = overlay(
        shown,
        cam[0],
        facts["prediction"]["label"],
        facts["prediction"]["prob"],
        note=note,
        cmap=cmap,
    )
    return picture, facts
