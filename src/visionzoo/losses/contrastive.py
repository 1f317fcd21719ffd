"""CLIP's symmetric contrastive (InfoNCE) loss — Radford et al., arXiv:2103.00020, §2.3 and
Fig. 3 — with features gathered across DDP ranks.

For a batch of N matched (image, text) pairs with L2-normalised features I, T (Tensor[N, E])
and logit scale s = exp(t):

    logits = s * I @ T^T                       (N, N): row i scores image i against every text
    loss   = ( CE(logits, arange(N)) + CE(logits^T, arange(N)) ) / 2

— the paper's pseudocode: cross-entropy over texts for each image and over images for each text,
averaged. Cross-entropy of a row is ``-log softmax`` at the matching (diagonal) entry.

**Across ranks** (DistributedDataParallel). The negatives should be the whole global batch, not
one rank's share, so each rank gathers every rank's features (:func:`gather_features`) and
scores *its own* rows against all of them ("local loss", open_clip's ``local_loss=True``):

    logits_i = s * I_local @ T_all^T    (n, N_total);  labels = arange(n) + offset_of_this_rank

The gather keeps the gradient: its backward all-reduces (sums) the incoming gradients and hands
each rank the slice of its own features, so a feature receives the gradient from every rank's
loss in which it is a negative. DDP then averages the parameter gradients over the W ranks,
which makes the update equal to the gradient of the single-process loss on the concatenated
batch (with equal per-rank batches: each rank's local loss is a mean over its n rows, their sum
is W times the global mean, and DDP divides by W). The loss *value* a rank sees is the mean
over its own rows; the mean over ranks is the global loss. Per-rank batch sizes may differ
(the last batch of an epoch): sizes are exchanged first and the features padded for the gather.

**Hard negative texts** (``negative_text_features``; Yuksekgonul et al., "When and why
vision-language models behave like bags-of-words", arXiv:2210.01936, "NegCLIP"): captions with
a word swapped are appended as extra columns of the image->text logits. They match no image, so
the text->image term is unchanged. A batch whose captions already differ in colour and count
can be solved without the shape words; a negative that differs *only* in a shape word cannot.

All of this (but the hard negatives) is the paper's; open_clip's default gathers *without* gradient and keeps only the
local slice's gradient, which drops the terms where a rank's features are another rank's
negatives — we keep them (its ``gather_with_grad=True``). The all-reduce, rather than a
reduce-scatter, also works with the gloo backend.

Shape glossary: n this rank's pairs, N_total all ranks' pairs, E embedding width, W ranks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import VisionZooError
from ..layers.precision import similarities

__all__ = ["gather_features", "clip_loss", "CLIPLoss"]


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every rank's Tensor[n_r, E] (sizes given) into Tensor[N_total, E]; backward
    sums the gradients of all ranks and returns this rank's slice."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: list[int], rank: int) -> Tensor:
        largest = max(sizes)
        padded = x
        if x.shape[0] < largest:  # all_gather needs equal shapes
            padded = torch.cat([x, x.new_zeros((largest - x.shape[0], *x.shape[1:]))])
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])  # (N_total, E)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        # A private contiguous copy: all_reduce works in place on the buffer autograd handed us.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)  # sum over ranks: every rank's loss touches every slice
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


def gather_features(*features: Tensor) -> tuple[list[Tensor], int]:
    """All ranks' features, concatenated in rank order, with gradient; and the row offset of
    this rank's features in them. Outside DDP (or with one rank) the inputs are returned as
    they are with offset 0.

    ``features``: Tensor[n, E] each (the same n within a rank; n may differ between ranks).
    """
    rank, world = _world()
    if world == 1:
        return list(features), 0
    n = features[0].shape[0]
    size = torch.tensor([n], device=features[0].device, dtype=torch.long)
    sizes_t = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes_t, size)
    sizes = [int(s.item()) for s in sizes_t]
    gathered = [_AllGatherWithGrad.apply(f, sizes, rank) for f in features]
    return gathered, sum(sizes[:rank])


def clip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    *,
    negative_text_features: Tensor | None = None,
    gather: bool | None = None,
) -> Tensor:
    """Symmetric InfoNCE loss of matched pairs (row i of each input is a pair).

    Args:
        image_features: Tensor[n, E], L2-normalised (``CLIP.forward`` returns them so).
        text_features: Tensor[n, E], L2-normalised.
        logit_scale: the *exponentiated* scale (``CLIP.forward``'s third output).
        negative_text_features: Tensor[m, E], L2-normalised: hard negative texts (e.g. captions
            with one word swapped, NegCLIP's recipe) appended to the texts each image is scored
            against; they match no image, so they only enter the image->text term. Gathered
            across ranks like the others.
        gather: score against all DDP ranks' features; None (default): whenever a process group
            with more than one rank is initialised.

    Returns the mean of the image->text and text->image cross-entropies over this rank's rows
    (0-dim). Raises VisionZooError for mismatched shapes.
    """
    if image_features.ndim != 2 or image_features.shape != text_features.shape:
        raise VisionZooError(
            "clip_loss: image_features and text_features must both be Tensor[n, E] of one "
            f"shape, got {tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    if negative_text_features is not None and (
        negative_text_features.ndim != 2
        or negative_text_features.shape[1] != text_features.shape[1]
    ):
        raise VisionZooError(
            "clip_loss: negative_text_features must be Tensor[m, E] with the features' E="
            f"{text_features.shape[1]}, got {tuple(negative_text_features.shape)}"
        )
    if gather is None:
        gather = _world()[1] > 1
    if gather:
        (all_images, all_texts), offset = gather_features(image_features, text_features)
        if negative_text_features is not None:
            (negative_text_features,), _ = gather_features(negative_text_features)
    else:
        all_images, all_texts, offset = image_features, text_features, 0
    n = image_features.shape[0]
    labels = torch.arange(offset, offset + n, device=image_features.device)  # (n,)
    if negative_text_features is not None:  # extra columns after the matched texts
        all_texts = torch.cat([all_texts, negative_text_features])
    # Similarities in float32 even under autocast (layers/precision.py says why).
    logits_per_image = logit_scale * similarities(image_features, all_texts)  # (n, N_total [+ M])
    logits_per_text = logit_scale * similarities(text_features, all_images)  # (n, N_total)
    return (
        F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)
    ) / 2


class CLIPLoss(nn.Module):
    """Module form of :func:`clip_loss`: ``loss(image_features, text_features, logit_scale)``,
    so that ``loss(*clip_model(images, tokens))`` works."""

    def __init__(self, gather: bool | None = None) -> None:
        super().__init__()
        self.gather = gather

    def forward(
        self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float
    ) -> Tensor:
        return clip_loss(image_features, text_features, logit_scale, gather=self.gather)
