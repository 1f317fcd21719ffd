"""Vision Transformer — Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for
Image Recognition at Scale", arXiv:2010.11929 — and DeiT — Touvron et al., "Training
data-efficient image transformers & distillation through attention", arXiv:2012.12877.

The idea (ViT §3.1): an image is a sequence of words. Cut it into PxP patches, project each
linearly to D dimensions (a stride-P convolution), prepend a learnable [CLS] token, add a learned
absolute position embedding, and run a standard pre-norm transformer encoder; the classifier
reads the final [CLS] token. There is no convolutional inductive bias beyond the patching, so
ViT needs large data (or DeiT's recipe) to beat CNNs.

DeiT §5 adds a second learnable **[distill] token** that goes through the encoder next to [CLS]
and has its own linear head (``head_dist``). During training the [CLS] head learns from the
labels and the [distill] head from a teacher's predictions (soft: KL at temperature tau; hard:
the teacher's argmax) — the loss is the task's business, not the model's. In training mode a
distilled model returns ``AuxOutput(logits_cls, aux=(logits_dist,))``; in eval mode it returns
the average of both heads' logits.

Switches: ``class_token`` (True: classify the [CLS] token; False: global average pooling of the
patch tokens, the "GAP" head of ViT App. D.3), ``pos_embed`` ("learned" or "none", App. D.4),
``drop_rate``, ``attn_drop_rate``, ``drop_path_rate`` (stochastic depth, used by DeiT),
``distilled`` (the [distill] token and head), ``img_size`` / ``patch_size``.

Attribute names are timm's ``VisionTransformer`` / ``VisionTransformerDistilled`` (patch_embed.proj,
cls_token, dist_token, pos_embed, blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2},
norm, head, head_dist), so timm state dicts load with no renames
(``interop.timm.from_timm``); torchvision's ``vit_b_16``/``vit_b_32`` convert with a key rename
(``interop.torchvision.from_torchvision``).

Departures from the papers (each also marked where it happens):

* Head: ViT pre-trains with an MLP head (one tanh hidden layer) and fine-tunes with a single
  linear layer; we build only the single linear layer, as DeiT, timm and torchvision's defaults.
* ``drop_rate`` is the ViT paper's dropout: after adding the position embedding and after every
  dense layer except the qkv projection (attention output, both MLP layers). timm's
  ``drop_rate`` is a dropout before the head instead; there is no head dropout here.
* ``class_token=False``: the final LayerNorm runs before the average pool (as the JAX original's
  "gap" classifier and timm with ``global_pool="avg", fc_norm=False``), not after it (timm's
  default ``fc_norm`` for average pooling).
* Initialisation follows timm (truncated normal std 0.02 for linear layers and the position
  embedding, zero biases, [CLS] ~ N(0, 1e-6), PyTorch's default for the patch projection), not
  the paper's Xavier-uniform / zero-initialised fine-tuning head.
* Position embeddings are resampled (bicubic, like timm's ``resample_abs_pos_embed``) for *any*
  input whose sides are multiples of the patch size, at forward time, and when a state dict of
  another grid is loaded; the paper interpolates only when fine-tuning at a higher resolution.
* DeiT's test-time fusion: the paper adds the two heads' softmax outputs; the official code and
  timm average the two heads' logits, which we follow (parity, and the argmax rarely differs).
* The hybrid (ResNet-stem) ViTs are not built.

Shape glossary: N batch, C channels, H x W image, P patch size, h x w = H/P x W/P patch grid,
T = number of prefix tokens (1 [CLS], +1 [distill]), L = T + h*w tokens, D width, K classes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ...errors import ModelArgumentError
from ...layers.transformer import Block, LayerNorm6, PatchEmbed, resize_pos_embed
from ...registry import register_model
from .._checks import check_bool
from ..outputs import AuxOutput
from ._base import Classifier, check_choice, check_positive_int

__all__ = [
    "VisionTransformer",
    "resize_pos_embed",
    "img_size_from_pos_embed",
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_small_patch32_224",
    "vit_base_patch16_224",
    "vit_base_patch32_224",
    "vit_large_patch16_224",
    "vit_large_patch32_224",
    "vit_b_16",
    "vit_b_32",
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "deit_base_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "deit_small_distilled_patch16_224",
    "deit_base_distilled_patch16_224",
    "vit_micro_patch4_32",
    "deit_micro_distilled_patch4_32",
]

POS_EMBED_CHOICES = ("learned", "none")


def _check_prob(name: str, value: object, *, model: str) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or math.isnan(float(value)) or not 0.0 <= float(value) < 1.0:
        raise ModelArgumentError(f"{model}: {name} must be a probability in [0, 1), got {value!r}")


def img_size_from_pos_embed(pos_embed: Tensor, patch_size: int, num_prefix_tokens: int) -> int:
    """The (square) training image size a position embedding Tensor[1, T + h*h, D] was made
    for: ``h * patch_size``. Raises ModelArgumentError when the grid part is not square."""
    num_grid = pos_embed.shape[1] - num_prefix_tokens
    side = math.isqrt(max(num_grid, 0))
    if num_grid <= 0 or side * side != num_grid:
        raise ModelArgumentError(
            f"pos_embed of shape {tuple(pos_embed.shape)} with {num_prefix_tokens} prefix "
            "token(s) does not hold a square patch grid; pass img_size explicitly"
        )
    return side * patch_size


class VisionTransformer(Classifier):
    """ViT / DeiT image classifier.

    Args:
        num_classes: K.
        in_chans: C.
        img_size: the training image size (square); the position embedding has
            (img_size / patch_size)^2 grid entries. Other input sizes that are multiples of
            ``patch_size`` also run (the embedding is resampled on the fly).
        patch_size: P.
        embed_dim: D.
        depth: number of encoder blocks.
        num_heads: attention heads (must divide D).
        mlp_ratio: MLP hidden width / D.
        qkv_bias: bias in the qkv projections.
        class_token: classify the [CLS] token (True) or the mean of the patch tokens (False).
        pos_embed: "learned" absolute position embedding or "none".
        drop_rate: the paper's dropout (position embedding, attention output, MLP layers).
        attn_drop_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth, rising linearly from 0 to this value over the blocks.
        distilled: DeiT's [distill] token and ``head_dist`` (needs ``class_token``).

    ``forward``: Tensor[N, C, H, W] -> Tensor[N, K]; a distilled model in training mode returns
    ``AuxOutput(logits_cls, aux=(logits_dist,))``.
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        class_token: bool = True,
        pos_embed: str = "learned",
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        distilled: bool = False,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        for arg, value in (
            ("num_classes", num_classes),
            ("in_chans", in_chans),
            ("img_size", img_size),
            ("patch_size", patch_size),
            ("embed_dim", embed_dim),
            ("depth", depth),
            ("num_heads", num_heads),
        ):
            check_positive_int(arg, value, model=name)
        if img_size % patch_size:
            raise ModelArgumentError(
                f"{name}: img_size {img_size} must be a multiple of patch_size {patch_size}"
            )
        if embed_dim % num_heads:
            raise ModelArgumentError(
                f"{name}: embed_dim {embed_dim} must be divisible by num_heads {num_heads}"
            )
        ratio_ok = isinstance(mlp_ratio, (int, float)) and not isinstance(mlp_ratio, bool)
        if not ratio_ok or not mlp_ratio > 0 or int(embed_dim * mlp_ratio) < 1:
            raise ModelArgumentError(f"{name}: mlp_ratio must be a number > 0, got {mlp_ratio!r}")
        for arg, value in (
            ("qkv_bias", qkv_bias),
            ("class_token", class_token),
            ("distilled", distilled),
        ):
            check_bool(arg, value, model=name)
        check_choice("pos_embed", pos_embed, POS_EMBED_CHOICES, model=name)
        for arg, value in (
            ("drop_rate", drop_rate),
            ("attn_drop_rate", attn_drop_rate),
            ("drop_path_rate", drop_path_rate),
        ):
            _check_prob(arg, value, model=name)
        if distilled and not class_token:
            raise ModelArgumentError(
                f"{name}: distilled=True needs class_token=True (the [CLS] head learns from "
                "the labels, the [distill] head from the teacher)"
            )

        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.in_chans = in_chans
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.class_token = class_token
        self.pos_embed_type = pos_embed
        self.distilled = distilled
        self.num_prefix_tokens = int(class_token) + int(distilled)  # T

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)  # (N, h*w, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if distilled else None
        num_tokens = self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        if pos_embed == "learned":
            # One entry per prefix token too, as the original ViT/DeiT (timm's default).
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))  # (1, L, D)
        else:
            self.register_parameter("pos_embed", None)
        # Departure (timm): drop_rate is the paper's dropout, also right after the position add.
        self.pos_drop = nn.Dropout(drop_rate)
        # Stochastic depth rises linearly with depth (DeiT, after arXiv:1603.09382).
        # (Plain Python, not torch.linspace: the model may be built on the meta device.)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(
            *(
                Block(
                    embed_dim,
                    num_heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    proj_drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=rate,
                    norm_layer=LayerNorm6,
                )
                for rate in rates
            )
        )
        self.norm = LayerNorm6(embed_dim)
        # Departure: a single linear head (the paper's pre-training head has a tanh hidden layer).
        self.head = nn.Linear(embed_dim, num_classes)
        self.head_dist = nn.Linear(embed_dim, num_classes) if distilled else None
        self._init_weights()

    def _init_weights(self) -> None:
        # Departure: timm's initialisation (see the module docstring).
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # --- position embedding ----------------------------------------------------------------------

    def _pos_embed_for(self, pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
        """``pos_embed`` Tensor[1, L, D] for a patch grid (resampled when it is not ours)."""
        if grid == self.grid_size:
            return pos_embed
        # Departure: resampled at forward time for any size (timm's dynamic_img_size).
        return resize_pos_embed(
            pos_embed, grid, self.grid_size, num_prefix_tokens=self.num_prefix_tokens
        )

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        # A checkpoint trained at another image size carries another grid: resample its
        # position embedding to ours (as timm's checkpoint filter does) so it loads.
        key = prefix + "pos_embed"
        ours = self.pos_embed
        theirs = state_dict.get(key)
        if ours is not None and isinstance(theirs, Tensor) and theirs.ndim == 3:
            num_grid = theirs.shape[1] - self.num_prefix_tokens
            square = num_grid > 0 and math.isqrt(num_grid) ** 2 == num_grid
            # Anything else (another width, another number of prefix tokens) is left to the
            # usual size-mismatch error.
            if theirs.shape[1] != ours.shape[1] and theirs.shape[2] == ours.shape[2] and square:
                state_dict[key] = resize_pos_embed(
                    theirs, self.grid_size, num_prefix_tokens=self.num_prefix_tokens
                )
        super()._load_from_state_dict(state_dict, prefix, *args)

    # --- forward ---------------------------------------------------------------------------------

    def forward_features(self, x: Tensor) -> Tensor:
        """Tensor[N, C, H, W] -> Tensor[N, L, D]: every token after the final LayerNorm."""
        images = x
        x = self.patch_embed(images)  # (N, C, H, W) -> (N, h*w, D); raises unless P divides H, W
        n, grid = x.shape[0], self.patch_embed.grid_size(images.shape[-2], images.shape[-1])
        prefix = [t.expand(n, -1, -1) for t in (self.cls_token, self.dist_token) if t is not None]
        if prefix:
            x = torch.cat([*prefix, x], dim=1)  # (N, T + h*w, D): [CLS], [distill], patches
        if self.pos_embed is not None:
            x = x + self._pos_embed_for(self.pos_embed, grid)
        x = self.pos_drop(x)
        x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor | AuxOutput:
        """Tensor[N, L, D] -> Tensor[N, K] (Tensor[N, D] pooled features if ``pre_logits``).

        Distilled models: the average of the [CLS] and [distill] heads in eval mode,
        ``AuxOutput(logits_cls, aux=(logits_dist,))`` in training mode, and the average of the
        two tokens as ``pre_logits`` features.
        """
        if self.distilled:
            cls, dist = x[:, 0], x[:, 1]  # (N, D) each
            if pre_logits:
                return (cls + dist) / 2
            logits, logits_dist = self.head(cls), self.head_dist(dist)
            if self.training:
                return AuxOutput(logits, (logits_dist,))
            # Departure (official code, timm): average logits, not the paper's sum of softmaxes.
            return (logits + logits_dist) / 2
        if self.class_token:
            x = x[:, 0]  # (N, L, D) -> (N, D): the [CLS] token
        else:
            x = x[:, self.num_prefix_tokens :].mean(dim=1)  # (N, h*w, D) -> (N, D): GAP
        return x if pre_logits else self.head(x)

    def reset_classifier(self, num_classes: int) -> None:
        """Fresh ``head`` (and ``head_dist``) with ``num_classes`` outputs."""
        check_positive_int("num_classes", num_classes, model=type(self).__name__)
        self.num_classes = num_classes
        device = self.head.weight.device
        self.head = _new_head(self.embed_dim, num_classes, device)
        if self.distilled:
            self.head_dist = _new_head(self.embed_dim, num_classes, device)


def _new_head(in_features: int, num_classes: int, device: torch.device) -> nn.Linear:
    head = nn.Linear(in_features, num_classes, device=device)
    nn.init.trunc_normal_(head.weight, std=0.02)
    nn.init.zeros_(head.bias)
    return head


# --- builders ------------------------------------------------------------------------------------

_VIT = "arXiv:2010.11929"
_DEIT = "arXiv:2012.12877"


def _build(
    patch_size: int, embed_dim: int, depth: int, num_heads: int, **kwargs: Any
) -> VisionTransformer:
    # The architecture is the builder's name; passing one of these again is an error
    # (create_model reports it as a ModelArgumentError). img_size and the switches stay free.
    return VisionTransformer(
        patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads, **kwargs
    )


@register_model(task="classification", family="vit", paper=_VIT, model_class=VisionTransformer)
def vit_tiny_patch16_224(**kwargs: Any) -> VisionTransformer:
    """ViT-Ti/16 (the DeiT paper's DeiT-Ti architecture, named as timm); 5,717,416 parameters."""
    return _build(16, 192, 12, 3, **kwargs)


@register_model(task="classification", family="vit", paper=_VIT, model_class=VisionTransformer)
def vit_small_patch16_224(**kwargs: Any) -> VisionTransformer:
    """ViT-S/16 (the DeiT paper's DeiT-S architecture, named as timm); 22,050,664 parameters."""
    return _build(16, 384, 12, 6, **kwargs)


@register_model(task="classification", family="vit", paper=_VIT, model_class=VisionTransformer)
def vit_small_patch32_224(**kwargs: Any) -> VisionTransformer:
    """ViT-S/32 (timm); 22,878,952 parameters."""
    return _build(32, 384, 12, 6, **kwargs)


@register_model(task="classification", family="vit", paper=_VIT, model_class=VisionTransformer)
def vit_base_patch16_224(**kwargs: Any) -> VisionTransformer:
    """ViT-B/16 (Table 1: 12 layers, D 768, MLP 3072, 12 heads); 86,567,656 parameters."""
    return _build(16, 768, 12, 12, **kwargs)


@register_model(task="classification", family="vit", paper=_VIT, model_class=VisionTransformer)
def vit_base_patch32_224(**kwargs: Any) -> VisionTransformer:
    """ViT-B/32; 88,224,232 parameters."""
    return _build(32, 768, 12, 12, **kwargs)


@register_model(task="classification", family="vit", paper=_VIT, model_class=VisionTransformer)
def vit_large_patch16_224(**kwargs: Any) -> VisionTransformer:
    """ViT-L/16 (Table 1: 24 layers, D 1024, MLP 4096, 16 heads); 304,326,632 parameters."""
    return _build(16, 1024, 24, 16, **kwargs)


@register_model(task="classification", family="vit", paper=_VIT, model_class=VisionTransformer)
def vit_large_patch32_224(**kwargs: Any) -> VisionTransformer:
    """ViT-L/32; 306,535,400 parameters."""
    return _build(32, 1024, 24, 16, **kwargs)


@register_model(task="classification", family="vit", paper=_VIT, model_class=VisionTransformer)
def vit_b_16(**kwargs: Any) -> VisionTransformer:
    """ViT-B/16 under torchvision's name (the network of ``vit_base_patch16_224``);
    86,567,656 parameters."""
    return _build(16, 768, 12, 12, **kwargs)


@register_model(task="classification", family="vit", paper=_VIT, model_class=VisionTransformer)
def vit_b_32(**kwargs: Any) -> VisionTransformer:
    """ViT-B/32 under torchvision's name (the network of ``vit_base_patch32_224``);
    88,224,232 parameters."""
    return _build(32, 768, 12, 12, **kwargs)


@register_model(task="classification", family="vit", paper=_DEIT, model_class=VisionTransformer)
def deit_tiny_patch16_224(**kwargs: Any) -> VisionTransformer:
    """DeiT-Ti (Table 1: D 192, 3 heads, 12 layers); 5,717,416 parameters."""
    return _build(16, 192, 12, 3, **kwargs)


@register_model(task="classification", family="vit", paper=_DEIT, model_class=VisionTransformer)
def deit_small_patch16_224(**kwargs: Any) -> VisionTransformer:
    """DeiT-S (Table 1: D 384, 6 heads, 12 layers); 22,050,664 parameters."""
    return _build(16, 384, 12, 6, **kwargs)


@register_model(task="classification", family="vit", paper=_DEIT, model_class=VisionTransformer)
def deit_base_patch16_224(**kwargs: Any) -> VisionTransformer:
    """DeiT-B (Table 1: the ViT-B architecture); 86,567,656 parameters."""
    return _build(16, 768, 12, 12, **kwargs)


@register_model(task="classification", family="vit", paper=_DEIT, model_class=VisionTransformer)
def deit_tiny_distilled_patch16_224(**kwargs: Any) -> VisionTransformer:
    """DeiT-Ti with the [distill] token and head (DeiT-Ti⚗); 5,910,800 parameters."""
    return _build(16, 192, 12, 3, distilled=True, **kwargs)


@register_model(task="classification", family="vit", paper=_DEIT, model_class=VisionTransformer)
def deit_small_distilled_patch16_224(**kwargs: Any) -> VisionTransformer:
    """DeiT-S with the [distill] token and head (DeiT-S⚗); 22,436,432 parameters."""
    return _build(16, 384, 12, 6, distilled=True, **kwargs)


@register_model(task="classification", family="vit", paper=_DEIT, model_class=VisionTransformer)
def deit_base_distilled_patch16_224(**kwargs: Any) -> VisionTransformer:
    """DeiT-B with the [distill] token and head (DeiT-B⚗); 87,338,192 parameters."""
    return _build(16, 768, 12, 12, distilled=True, **kwargs)


# Small models for CPU training on 32-64 px images (not in the papers): 8x8 patches of a 32x32
# image at P=4 give 64 tokens, D=128, 6 blocks of 4 heads.


@register_model(
    task="classification",
    family="vit",
    input_size=(3, 32, 32),
    paper=_VIT,
    model_class=VisionTransformer,
)
def vit_micro_patch4_32(**kwargs: Any) -> VisionTransformer:
    """ViT-micro/4 for 32x32 images (D 128, 6 layers, 4 heads); 1,333,608 parameters."""
    kwargs.setdefault("img_size", 32)
    return _build(4, 128, 6, 4, **kwargs)


@register_model(
    task="classification",
    family="vit",
    input_size=(3, 32, 32),
    paper=_DEIT,
    model_class=VisionTransformer,
)
def deit_micro_distilled_patch4_32(**kwargs: Any) -> VisionTransformer:
    """DeiT-micro⚗/4 for 32x32 images (D 128, 6 layers, 4 heads, [distill] token);
    1,462,864 parameters."""
    kwargs.setdefault("img_size", 32)
    return _build(4, 128, 6, 4, distilled=True, **kwargs)
