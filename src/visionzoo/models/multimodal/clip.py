"""CLIP — Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", arXiv:2103.00020.

The idea (§2.3, Fig. 3): train an image encoder and a text encoder *jointly* so that, in a batch
of N (image, text) pairs, the N correct pairings score higher than the N^2 - N wrong ones. Each
encoder's feature is linearly projected into a shared E-dimensional space and L2-normalised;
the N x N matrix of cosine similarities, multiplied by a learned temperature ``exp(t)``, is read
as logits of a classification over texts (rows) and over images (columns), and the loss is the
mean of the two cross-entropies (:func:`visionzoo.losses.contrastive.clip_loss`). A model
trained this way classifies images **zero-shot** (§3.1.2): embed "a photo of a {class}." for
every class name (averaged over several prompt templates, §3.1.4) and pick the class whose text
embedding is closest to the image's (:func:`zero_shot_classifier`, :func:`zero_shot_predict`);
the same similarities rank texts for an image and images for a text (:func:`retrieval_scores`,
:mod:`visionzoo.metrics.retrieval`).

Towers (§2.4):

* image: a Vision Transformer with "an additional layer normalization to the combined patch and
  position embeddings before the transformer" (:class:`CLIPVisionTransformer`: ``norm_pre``;
  its [CLS] token after the final LayerNorm is projected) or CLIP's modified ResNet with
  attention pooling (:class:`~.modified_resnet.ModifiedResNet`, whose attention pool ends in the
  projection);
* text: a causal transformer pooled at the end-of-text token
  (:class:`~.text.TextTransformer`).

Temperature: "initialized to the equivalent of 0.07 [t = ln(1/0.07)] and clipped to prevent
scaling the logits by more than 100". Departure (marked where it happens): we clamp ``t`` to
ln(100) inside ``forward`` (so the returned scale never exceeds 100) *and* offer
:meth:`CLIP.clamp_logit_scale_` for the training loop to call after each optimiser step, which
is what OpenAI's and open_clip's training code do (their ``forward`` does not clamp). The clamp
in forward has no gradient above the bound, so a loop that wants the scale to come back down
must use :meth:`CLIP.clamp_logit_scale_`.

Model convention (DESIGN §3, same order as open_clip): ``encode_image(images, normalize=False)``
-> Tensor[N, E]; ``encode_text(tokens, normalize=False)`` -> Tensor[N, E];
``forward(images, tokens)`` -> :class:`CLIPOutput` ``(image_features, text_features,
logit_scale)`` with L2-normalised features and the *exponentiated, clamped* scale
(``min(exp(t), 100)``, a 0-dim tensor), exactly open_clip's ``CLIP.forward`` output order.

Other departures, marked where they happen: the ViT tower's blocks use OpenAI's text-tower
initialisation (OpenAI left the image ViT at PyTorch's defaults); the ViT tower resamples its
position embedding for other input sizes, as the zoo's ViT; the activation is a switch
(``act_layer="gelu"``, open_clip's default, or ``"quick_gelu"``, OpenAI's released models).

Attribute names: ``visual`` (image tower), ``text`` (text tower), ``logit_scale``; the
converter :func:`visionzoo.interop.open_clip.from_open_clip` maps open_clip's state dicts.

Shape glossary: N images / texts, C=3, H x W image, P patch, h x w = H/P x W/P grid,
L tokens, D tower width, E joint embedding width, K classes, T prompt templates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ModelArgumentError
from ...layers.precision import unit_rows
from ...layers.transformer import Block, PatchEmbed, resize_pos_embed
from ...registry import register_model
from .._checks import check_bool, check_positive_int
from .modified_resnet import AttentionPool2d, ModifiedResNet
from .text import LayerNorm5, TextTransformer, act_layer_for, init_clip_blocks

__all__ = [
    "CLIPOutput",
    "CLIPVisionTransformer",
    "CLIP",
    "zero_shot_classifier",
    "zero_shot_predict",
    "retrieval_scores",
    "DEFAULT_TEMPLATES",
    "clip_vit_b_32",
    "clip_vit_b_16",
    "clip_rn50",
    "clip_tiny",
    "clip_tiny_vit",
    "clip_tiny_rn",
]

_PAPER = "arXiv:2103.00020"
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


class CLIPOutput(NamedTuple):
    """What ``CLIP.forward`` returns (a tuple: unpacks as open_clip's output)."""

    image_features: Tensor | None  # (N, E), L2-normalised
    text_features: Tensor | None  # (N, E), L2-normalised
    logit_scale: Tensor  # 0-dim, min(exp(t), 100)


# --- image tower: ViT ----------------------------------------------------------------------------


class CLIPVisionTransformer(nn.Module):
    """CLIP's ViT image tower: ViT with a LayerNorm before the blocks, the [CLS] token after the
    final LayerNorm projected (no bias) to the joint space.

    Args:
        image_size: training image size (square; other multiples of ``patch_size`` also run,
            with the position embedding resampled).
        patch_size: P.
        width: D.
        layers: number of blocks.
        heads: attention heads (CLIP: D / 64).
        output_dim: E.
        mlp_ratio: MLP hidden width / D.
        act_layer: "gelu" or "quick_gelu".

    ``forward``: Tensor[N, 3, H, W] -> Tensor[N, E] (unnormalised);
    ``forward_features``: -> Tensor[N, 1 + h*w, D], every token after the final LayerNorm.
    """

    def __init__(
        self,
        *,
        image_size: int = 224,
        patch_size: int = 32,
        width: int = 768,
        layers: int = 12,
        heads: int = 12,
        output_dim: int = 512,
        mlp_ratio: float = 4.0,
        act_layer: str = "gelu",
    ) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value in (
            ("image_size", image_size),
            ("patch_size", patch_size),
            ("width", width),
            ("layers", layers),
            ("heads", heads),
            ("output_dim", output_dim),
        ):
            check_positive_int(arg, value, model=name)
        if image_size % patch_size:
            raise ModelArgumentError(
                f"{name}: image_size {image_size} must be a multiple of patch_size {patch_size}"
            )
        if width % heads:
            raise ModelArgumentError(f"{name}: width {width} must be divisible by heads {heads}")
        act = act_layer_for(act_layer, model=name)
        self.image_size = image_size
        self.patch_size = patch_size
        self.width = width
        self.output_dim = output_dim
        self.grid_size = (image_size // patch_size, image_size // patch_size)

        # CLIP's patch projection has no bias (the LayerNorm after it would cancel a bias).
        self.patch_embed = PatchEmbed(patch_size, 3, width, bias=False)  # (N, h*w, D)
        scale = width**-0.5
        self.cls_token = nn.Parameter(scale * torch.randn(1, 1, width))
        num_tokens = 1 + self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(scale * torch.randn(1, num_tokens, width))  # (1, L, D)
        # The paper's addition to ViT: LayerNorm on the embedded tokens before the blocks.
        self.norm_pre = LayerNorm5(width)
        self.blocks = nn.Sequential(
            *(
                Block(width, heads, mlp_ratio=mlp_ratio, act_layer=act, norm_layer=LayerNorm5)
                for _ in range(layers)
            )
        )
        self.norm = LayerNorm5(width)  # OpenAI's ln_post
        self.proj = nn.Linear(width, output_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=scale)
        # Departure: OpenAI left these blocks at PyTorch's default initialisation.
        init_clip_blocks(self.blocks, width)

    def forward_features(self, x: Tensor) -> Tensor:
        """Tensor[N, 3, H, W] -> Tensor[N, 1 + h*w, D] after the final LayerNorm."""
        images = x
        x = self.patch_embed(images)  # (N, h*w, D); raises unless P divides H and W
        grid = self.patch_embed.grid_size(images.shape[-2], images.shape[-1])
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        pos = self.pos_embed
        if grid != self.grid_size:
            # Departure: resampled for other input sizes (as the zoo's ViT).
            pos = resize_pos_embed(pos, grid, self.grid_size, num_prefix_tokens=1)
        x = self.norm_pre(x + pos.to(x.dtype))  # (N, 1 + h*w, D)
        x = self.blocks(x)
        return self.norm(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.forward_features(x)[:, 0])  # [CLS]: (N, D) -> (N, E)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # Position embeddings of another training size are resampled to ours on load.
        key = prefix + "pos_embed"
        theirs = state_dict.get(key)
        ours = self.pos_embed
        if (
            isinstance(theirs, Tensor)
            and theirs.ndim == 3
            and theirs.shape[1] != ours.shape[1]
            and theirs.shape[2] == ours.shape[2]
        ):
            num_grid = theirs.shape[1] - 1
            if num_grid > 0 and math.isqrt(num_grid) ** 2 == num_grid:
                state_dict[key] = resize_pos_embed(theirs, self.grid_size, num_prefix_tokens=1)
        super()._load_from_state_dict(state_dict, prefix, *args)


# --- image tower: any zoo classifier ------------------------------------------------------------


def _zoo_image_tower(vision_model: object, args: object, embed_dim: int, model: str) -> nn.Module:
    """Zoo classifier ``vision_model`` whose classifier outputs the E-dim image feature."""
    from ...registry import create_model, get_model_entry

    if not isinstance(vision_model, str):
        raise ModelArgumentError(
            f"{model}: vision_model must be a zoo model name, got {vision_model!r}"
        )
    if args is not None and not isinstance(args, dict):
        raise ModelArgumentError(
            f"{model}: vision_model_args must be a dict of builder arguments, got {args!r}"
        )
    entry = get_model_entry(vision_model)  # unknown names: UnknownModelError, did-you-mean
    if entry.task != "classification":
        raise ModelArgumentError(
            f"{model}: vision_model={vision_model!r} is a {entry.task} model; the image tower "
            "must be a classifier (its classifier becomes the projection)"
        )
    args = dict(args or {})
    if "num_classes" in args:
        raise ModelArgumentError(
            f"{model}: vision_model_args may not set num_classes: it is embed_dim ({embed_dim})"
        )
    return create_model(vision_model, num_classes=embed_dim, **args)


class ZooAttentionPoolTower(nn.Module):
    """A zoo classifier's feature map pooled by CLIP's attention pool (§2.4: "we replace the
    global average pooling layer with an attention pooling mechanism") instead of its own
    average pool and classifier; the pool's output projection maps into the joint space.

    ``trunk``: the classifier (its ``forward_features`` gives Tensor[N, C, h, w]). Its head
    (``fc``, ``classifier`` or ``head``) is replaced by an identity, and any other parameter
    that ``forward_features`` does not reach (auxiliary classifiers) is frozen, so that every
    trainable parameter gets a gradient (DDP needs that). ``forward``: Tensor[N, 3, H, W] ->
    Tensor[N, E].
    """

    def __init__(
        self, trunk: nn.Module, image_size: int, embed_dim: int, heads: int | None, model: str
    ) -> None:
        super().__init__()
        for attr in ("fc", "classifier", "head"):
            if isinstance(getattr(trunk, attr, None), nn.Module):
                setattr(trunk, attr, nn.Identity())  # the attention pool projects instead
        # One probe (eval mode: batch-norm statistics stay as they are) gives the feature map's
        # shape and, through its gradients, the parameters the pooled path never uses.
        was_training = trunk.training
        trunk.eval()
        with torch.enable_grad():
            probe = trunk.forward_features(torch.zeros(1, 3, image_size, image_size))
            if probe.requires_grad:
                probe.float().sum().backward()
        trunk.train(was_training)
        for p in trunk.parameters():
            if p.grad is None:
                p.requires_grad_(False)
            p.grad = None
        if probe.ndim != 4 or probe.shape[2] != probe.shape[3]:
            raise ModelArgumentError(
                f"{model}: vision_pool='attention' needs a square feature map from the image "
                f"tower, got shape {tuple(probe.shape)}"
            )
        channels, side = int(probe.shape[1]), int(probe.shape[2])
        heads = max(channels // 64, 1) if heads is None else heads
        self.trunk = trunk
        self.attnpool = AttentionPool2d(side, channels, heads, embed_dim)

    def forward(self, images: Tensor) -> Tensor:
        return self.attnpool(self.trunk.forward_features(images))


# --- the model -----------------------------------------------------------------------------------


def _check_float(name: str, value: object, *, model: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)):
        raise ModelArgumentError(f"{model}: {name} must be a finite number, got {value!r}")
    return float(value)


class CLIP(nn.Module):
    """Contrastive image-text model: an image tower and a text tower into one joint space.

    The arguments follow OpenAI's ``CLIP`` constructor.

    Args:
        embed_dim: E, the joint embedding width.
        image_size: training image size.
        vision_layers: an int — blocks of a ViT image tower — or 4 ints — bottlenecks per stage
            of a modified-ResNet tower.
        vision_width: D of the ViT, or the stem width W of the ResNet.
        vision_patch_size: P of the ViT (must be None for a ResNet tower).
        vision_heads: attention heads of the ViT / the ResNet's attention pool; default
            D / 64 (ViT) or 32 W / 64 (ResNet), as CLIP.
        vision_model: instead of the two towers above, any zoo classifier by name (e.g.
            ``"resnet20"``), built with ``num_classes=E`` so that its classifier is the linear
            projection into the joint space (the paper's towers end in one too);
            ``vision_layers``, ``vision_width``, ``vision_patch_size`` and ``vision_heads`` are
            then unused. Not in the paper: a way to measure other image towers.
        vision_model_args: keyword arguments for ``vision_model``'s builder (its switches).
        context_length: the text tower's longest token sequence.
        vocab_size: rows of the token embedding (>= the tokenizer's vocabulary size).
        text_width, text_heads, text_layers: the text transformer.
        mlp_ratio: MLP hidden width / width of both transformers.
        act_layer: "gelu" or "quick_gelu" (both transformers).
        causal_text: the text tower's causal mask (False: bidirectional, an ablation).
        eot_token_id: the end-of-text id the text feature is pooled at; None: the position
            of the highest id (OpenAI's vocabulary, where <end_of_text> = 49407).
        init_logit_scale: initial t (the logit scale is exp(t)); the paper's ln(1 / 0.07).
        max_logit_scale: t is clamped to this; the paper's ln(100).
        learn_logit_scale: learn t (the paper); False keeps it fixed (a switch for ablation).
        vision_pool: "avg" (the zoo tower's own global average pool and classifier) or
            "attention" (CLIP's attention pool over its feature map, :class:`ZooAttentionPoolTower`,
            ``vision_heads`` heads, default C / 64); zoo towers only. Not in the paper for
            these towers; a switch to measure the paper's pooling on them.
        text_length_buckets: the text tower's ``length_buckets`` (a speed switch: same
            features; :class:`~.text.TextTransformer`).
    """

    def __init__(
        self,
        *,
        embed_dim: int = 512,
        image_size: int = 224,
        vision_layers: int | Sequence[int] = 12,
        vision_width: int = 768,
        vision_patch_size: int | None = 32,
        vision_heads: int | None = None,
        vision_model: str | None = None,
        vision_model_args: dict[str, Any] | None = None,
        context_length: int = 77,
        vocab_size: int = 49408,
        text_width: int = 512,
        text_heads: int = 8,
        text_layers: int = 12,
        mlp_ratio: float = 4.0,
        act_layer: str = "gelu",
        causal_text: bool = True,
        eot_token_id: int | None = None,
        init_logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float = math.log(100),
        learn_logit_scale: bool = True,
        vision_pool: str = "avg",
        text_length_buckets: int = 1,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        check_positive_int("embed_dim", embed_dim, model=name)
        check_positive_int("vision_width", vision_width, model=name)
        check_bool("learn_logit_scale", learn_logit_scale, model=name)
        init_logit_scale = _check_float("init_logit_scale", init_logit_scale, model=name)
        max_logit_scale = _check_float("max_logit_scale", max_logit_scale, model=name)
        if init_logit_scale > max_logit_scale:
            raise ModelArgumentError(
                f"{name}: init_logit_scale {init_logit_scale} exceeds max_logit_scale "
                f"{max_logit_scale}"
            )
        if vision_pool not in ("avg", "attention"):
            raise ModelArgumentError(
                f"{name}: vision_pool must be 'avg' or 'attention', got {vision_pool!r}"
            )
        if vision_pool == "attention" and vision_model is None:
            raise ModelArgumentError(
                f"{name}: vision_pool='attention' applies to a zoo image tower (vision_model); "
                "the modified ResNet always pools by attention and the ViT by its [CLS] token"
            )
        if vision_model is not None:
            self.visual = _zoo_image_tower(vision_model, vision_model_args, embed_dim, name)
            if vision_pool == "attention":
                self.visual = ZooAttentionPoolTower(
                    self.visual, image_size, embed_dim, vision_heads, name
                )
            self.vision_type = "zoo"
        elif isinstance(vision_layers, Sequence) and not isinstance(vision_layers, (str, bytes)):
            if vision_patch_size is not None:
                raise ModelArgumentError(
                    f"{name}: a ResNet image tower (vision_layers={tuple(vision_layers)!r}) "
                    f"takes no patch size; pass vision_patch_size=None, got {vision_patch_size!r}"
                )
            heads = vision_width * 32 // 64 if vision_heads is None else vision_heads
            self.visual: nn.Module = ModifiedResNet(
                layers=tuple(vision_layers),
                output_dim=embed_dim,
                heads=heads,
                image_size=image_size,
                width=vision_width,
            )
            self.vision_type = "resnet"
        elif isinstance(vision_layers, int) and not isinstance(vision_layers, bool):
            if vision_patch_size is None:
                raise ModelArgumentError(
                    f"{name}: a ViT image tower (vision_layers={vision_layers}) needs "
                    "vision_patch_size"
                )
            heads = max(vision_width // 64, 1) if vision_heads is None else vision_heads
            self.visual = CLIPVisionTransformer(
                image_size=image_size,
                patch_size=vision_patch_size,
                width=vision_width,
                layers=vision_layers,
                heads=heads,
                output_dim=embed_dim,
                mlp_ratio=mlp_ratio,
                act_layer=act_layer,
            )
            self.vision_type = "vit"
        else:
            raise ModelArgumentError(
                f"{name}: vision_layers must be an int (ViT blocks) or 4 ints (ResNet stages), "
                f"got {vision_layers!r}"
            )
        self.text = TextTransformer(
            vocab_size=vocab_size,
            context_length=context_length,
            width=text_width,
            layers=text_layers,
            heads=text_heads,
            output_dim=embed_dim,
            mlp_ratio=mlp_ratio,
            act_layer=act_layer,
            causal=causal_text,
            eot_token_id=eot_token_id,
            length_buckets=text_length_buckets,
        )
        self.embed_dim = embed_dim
        self.image_size = image_size
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.max_logit_scale = max_logit_scale
        # t, with exp(t) the inverse temperature; a 0-dim parameter as open_clip's.
        self.logit_scale = nn.Parameter(
            torch.tensor(init_logit_scale), requires_grad=learn_logit_scale
        )

    # --- encoders --------------------------------------------------------------------------------

    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:
        """Tensor[N, 3, H, W] -> Tensor[N, E] (L2-normalised if ``normalize``)."""
        features = self.visual(images)
        return unit_rows(features) if normalize else features

    def encode_text(self, tokens: Tensor, normalize: bool = False) -> Tensor:
        """Tensor[N, L] token ids -> Tensor[N, E] (L2-normalised if ``normalize``)."""
        features = self.text(tokens)
        return unit_rows(features) if normalize else features

    # --- temperature -----------------------------------------------------------------------------

    def scale(self) -> Tensor:
        """The logit scale ``min(exp(t), exp(max_logit_scale))`` (0-dim)."""
        # Departure: clamped here as well as by clamp_logit_scale_ (see the module docstring).
        return self.logit_scale.clamp(max=self.max_logit_scale).exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clip t into [0, max_logit_scale] in place; call after each optimiser step (as
        OpenAI's and open_clip's training loops do)."""
        self.logit_scale.clamp_(0, self.max_logit_scale)

    # --- forward ---------------------------------------------------------------------------------

    def forward(self, images: Tensor | None = None, tokens: Tensor | None = None) -> CLIPOutput:
        """``(image_features, text_features, logit_scale)``: normalised features (None for a
        missing input) and the exponentiated, clamped logit scale."""
        image_features = self.encode_image(images, normalize=True) if images is not None else None
        text_features = self.encode_text(tokens, normalize=True) if tokens is not None else None
        return CLIPOutput(image_features, text_features, self.scale())

    def logits(self, images: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits_per_image Tensor[N_img, N_txt], logits_per_text Tensor[N_txt, N_img])``."""
        image_features, text_features, scale = self(images, tokens)
        logits_per_image = scale * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


# --- zero-shot classification and retrieval ------------------------------------------------------


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _fill(template: str | Callable[[str], str], class_name: str) -> str:
    if callable(template):
        return template(class_name)
    if "{}" not in template:
        raise ModelArgumentError(
            f"prompt template {template!r} has no '{{}}' placeholder for the class name"
        )
    return template.format(class_name)


@torch.no_grad()
def zero_shot_classifier(
    model: CLIP,
    tokenizer: Callable[[list[str]], Tensor],
    class_names: Sequence[str],
    templates: Sequence[str | Callable[[str], str]] = DEFAULT_TEMPLATES,
    *,
    batch_size: int = 256,
) -> Tensor:
    """Zero-shot classifier weights Tensor[K, E] (§3.1.4 prompt ensembling).

    For each class, the class name is put into every template ("a photo of a {}." or a
    callable), the texts are embedded and L2-normalised, averaged over the templates and
    normalised again. ``tokenizer(texts)`` must return Tensor[N, L] ids (a
    :class:`~visionzoo.data.tokenizers.TextTokenizer`, or open_clip's). Rows are classes, so
    ``image_features @ weights.T`` gives Tensor[N, K] (open_clip's classifier is the transpose).
    """
    if isinstance(class_names, str) or not class_names:
        raise ModelArgumentError(
            f"class_names must be a non-empty list of names, got {class_names!r}"
        )
    if isinstance(templates, str) or not templates:
        raise ModelArgumentError(
            f"templates must be a non-empty list of prompts, got {templates!r}"
        )
    check_positive_int("batch_size", batch_size, model="zero_shot_classifier")
    texts = [_fill(t, c) for c in class_names for t in templates]  # (K*T,), class-major
    tokens = tokenizer(texts)
    device = _model_device(model)
    features = torch.cat(
        [
            model.encode_text(tokens[i : i + batch_size].to(device), normalize=True)
            for i in range(0, len(texts), batch_size)
        ]
    )  # (K*T, E)
    features = features.reshape(len(class_names), len(templates), -1).mean(dim=1)  # (K, E)
    return F.normalize(features, dim=-1)


@torch.no_grad()
def zero_shot_predict(model: CLIP, images: Tensor, classifier: Tensor) -> Tensor:
    """Logits Tensor[N, K] = scale * cos(image, class): ``images`` Tensor[N, 3, H, W],
    ``classifier`` Tensor[K, E] from :func:`zero_shot_classifier`. ``argmax(-1)`` is the
    predicted class; ``softmax(-1)`` the paper's class probabilities."""
    device = _model_device(model)
    features = model.encode_image(images.to(device), normalize=True)  # (N, E)
    return model.scale() * features @ classifier.to(features).t()


@torch.no_grad()
def retrieval_scores(
    model: CLIP, images: Tensor, tokens: Tensor, *, batch_size: int = 256
) -> Tensor:
    """Cosine similarities Tensor[N_img, N_txt] of every image with every text (no
    temperature: ranking does not depend on it). Feed them to
    :func:`visionzoo.metrics.retrieval.retrieval_recall`."""
    check_positive_int("batch_size", batch_size, model="retrieval_scores")
    device = _model_device(model)
    image_features = torch.cat(
        [
            model.encode_image(images[i : i + batch_size].to(device), normalize=True)
            for i in range(0, images.shape[0], batch_size)
        ]
    )  # (N_img, E)
    text_features = torch.cat(
        [
            model.encode_text(tokens[i : i + batch_size].to(device), normalize=True)
            for i in range(0, tokens.shape[0], batch_size)
        ]
    )  # (N_txt, E)
    return image_features @ text_features.t()


# --- builders ------------------------------------------------------------------------------------


def _build(arch: dict[str, Any], kwargs: dict[str, Any]) -> CLIP:
    # The architecture is the builder's name: passing one of its keys again is an error that
    # create_model reports as a ModelArgumentError. Everything else stays free.
    return CLIP(**arch, **kwargs)


_VIT_B_TEXT = {"text_width": 512, "text_heads": 8, "text_layers": 12}


@register_model(task="image-text", family="clip", paper=_PAPER, model_class=CLIP)
def clip_vit_b_32(**kwargs: Any) -> CLIP:
    """CLIP ViT-B/32 (Table 20: E 512, image 224, ViT 12 x 768 / 12 heads, text 12 x 512 /
    8 heads, vocabulary 49,408); 151,277,313 parameters. Random initialisation."""
    arch = {
        "embed_dim": 512,
        "vision_layers": 12,
        "vision_width": 768,
        "vision_patch_size": 32,
        **_VIT_B_TEXT,
    }
    return _build(arch, kwargs)


@register_model(task="image-text", family="clip", paper=_PAPER, model_class=CLIP)
def clip_vit_b_16(**kwargs: Any) -> CLIP:
    """CLIP ViT-B/16 (Table 20); 149,620,737 parameters. Random initialisation."""
    arch = {
        "embed_dim": 512,
        "vision_layers": 12,
        "vision_width": 768,
        "vision_patch_size": 16,
        **_VIT_B_TEXT,
    }
    return _build(arch, kwargs)


@register_model(task="image-text", family="clip", paper=_PAPER, model_class=CLIP)
def clip_rn50(**kwargs: Any) -> CLIP:
    """CLIP RN50 (Table 19: E 1024, modified ResNet-50 with attention pooling, text 12 x 512 /
    8 heads); 102,007,137 parameters. Random initialisation."""
    arch = {
        "embed_dim": 1024,
        "vision_layers": (3, 4, 6, 3),
        "vision_width": 64,
        "vision_patch_size": None,
        **_VIT_B_TEXT,
    }
    return _build(arch, kwargs)


# Small models for CPU training on the 64x64 `shapes` captions (not in the paper). Every argument
# is a default here, not fixed by the name: they are knobs of a toy, not a paper architecture.
_TINY_TEXT = {
    "embed_dim": 128,
    "image_size": 64,
    "context_length": 32,
    "vocab_size": 512,
    "eot_token_id": 2,  # <end_of_text> of train_tokenizer(style="clip")
    "text_width": 128,
    "text_heads": 2,
    "text_layers": 4,
}


@register_model(
    task="image-text", family="clip", input_size=(3, 32, 32), paper=_PAPER, model_class=CLIP
)
def clip_tiny(**kwargs: Any) -> CLIP:
    """A small CLIP for CPU training on small images (not in the paper): the zoo's ``resnet20``
    (the ResNet paper's CIFAR network; its classifier is the projection to E) as the image
    tower, text 4 x 128 / 2 heads over 32 tokens, E 128; 32x32 images.

    Why a CIFAR ResNet and not CLIP's towers: on the built-in ``shapes`` data it is the tower
    that learns shapes fastest from scratch (docs/vision_language.md, "Choosing the image
    tower"); ``clip_tiny_vit`` and ``clip_tiny_rn`` are the ViT and modified-ResNet versions.
    Arguments as :func:`clip_tiny_vit` (pass ``tokenizer.vocab_size`` and
    ``tokenizer.eot_token_id``); ``vision_model``/``vision_model_args`` pick another tower.
    """
    arch = {**_TINY_TEXT, "image_size": 32, "vision_model": "resnet20"}
    return CLIP(**{**arch, **kwargs})


@register_model(
    task="image-text", family="clip", input_size=(3, 64, 64), paper=_PAPER, model_class=CLIP
)
def clip_tiny_vit(**kwargs: Any) -> CLIP:
    """A small CLIP for CPU training on 64x64 images (not in the paper): ViT 4 x 192 / 3 heads
    with 8x8 patches (64 patch tokens), text 4 x 128 / 2 heads over 32 tokens, E 128;
    2,733,697 parameters with the default 512-entry vocabulary.

    ``vocab_size`` (default 512) must cover the tokenizer's vocabulary and ``eot_token_id``
    (default 2, the ``<end_of_text>`` id of :func:`visionzoo.data.tokenizers.train_tokenizer`'s
    CLIP style) must be its end-of-text id: pass ``tokenizer.vocab_size`` and
    ``tokenizer.eot_token_id``. Every other argument may be overridden too.
    """
    arch = {
        **_TINY_TEXT,
        "vision_layers": 4,
        "vision_width": 192,
        "vision_patch_size": 8,
    }
    return CLIP(**{**arch, **kwargs})


@register_model(
    task="image-text", family="clip", input_size=(3, 64, 64), paper=_PAPER, model_class=CLIP
)
def clip_tiny_rn(**kwargs: Any) -> CLIP:
    """``clip_tiny`` with a small modified-ResNet image tower instead of the ViT (not in the
    paper): one bottleneck per stage, stem width 32 (C5 width 1024, a 2x2 map at 64x64), a
    16-head attention pool; the convolutional prior learns shapes from few images faster than
    a ViT trained from scratch. Same text tower and arguments as ``clip_tiny``."""
    arch = {
        **_TINY_TEXT,
        "vision_layers": (1, 1, 1, 1),
        "vision_width": 32,
        "vision_patch_size": None,
    }
    return CLIP(**{**arch, **kwargs})
