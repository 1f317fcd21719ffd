"""Image <-> text retrieval recall@k (CLIP arXiv:2103.00020 §3.1.5 / Table 13; BLIP
arXiv:2201.12086 Table 5), the metric of Flickr30k / COCO retrieval.

Input: a similarity matrix Tensor[N_img, N_txt] (higher = more alike; e.g.
:func:`visionzoo.models.multimodal.clip.retrieval_scores`) and, for each text, the index of the
image it describes (``text_to_image`` Tensor[N_txt]; COCO has 5 captions per image). Default:
text j describes image j (a square matrix of matched pairs).

* **image -> text** R@k: the fraction of images for which *any* of their texts is among the k
  highest-scoring texts (the standard protocol: an image with 5 captions is retrieved correctly
  if one of them ranks in the top k);
* **text -> image** R@k: the fraction of texts whose image is among the k highest-scoring
  images.

Values are fractions in [0, 1] (as :func:`visionzoo.metrics.classification.accuracy_topk`);
k larger than the number of candidates is clipped to it. Ties are broken by ``torch.topk``.
Vectorised: one ``topk`` per direction, no Python loop over queries.

Shape glossary: N_img images, N_txt texts, k cut-off.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ..errors import DataError

__all__ = ["image_to_text_recall", "text_to_image_recall", "retrieval_recall"]


def _check(similarity: Tensor, text_to_image: Tensor | None) -> Tensor:
    if similarity.ndim != 2:
        raise DataError(
            f"similarity must be Tensor[N_img, N_txt], got shape {tuple(similarity.shape)}"
        )
    n_img, n_txt = similarity.shape
    if text_to_image is None:
        if n_img != n_txt:
            raise DataError(
                f"similarity is {n_img}x{n_txt}: pass text_to_image (the image index of each "
                "text) when images and texts are not matched one to one"
            )
        return torch.arange(n_txt, device=similarity.device)
    text_to_image = torch.as_tensor(text_to_image, device=similarity.device)
    if text_to_image.shape != (n_txt,) or text_to_image.is_floating_point():
        raise DataError(
            f"text_to_image must be Tensor[{n_txt}] of image indices, got shape "
            f"{tuple(text_to_image.shape)} and dtype {text_to_image.dtype}"
        )
    if n_txt and (int(text_to_image.min()) < 0 or int(text_to_image.max()) >= n_img):
        raise DataError(f"text_to_image holds indices outside [0, {n_img}) (the images)")
    return text_to_image.long()


def _ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise DataError(f"ks must be positive integers, got {ks}")
    return ks


def _hits_at(hit: Tensor, ks: tuple[int, ...], available: int) -> dict[int, float]:
    # hit: (Q, maxk) bool, position-wise "this candidate is correct"; cumsum marks rows that
    # have a correct candidate among the first k.
    found = hit.cumsum(dim=1) > 0  # (Q, maxk)
    out = {}
    for k in ks:
        col = min(k, available) - 1
        out[k] = float(found[:, col].float().mean()) if hit.shape[0] else float("nan")
    return out


@torch.no_grad()
def image_to_text_recall(
    similarity: Tensor, text_to_image: Tensor | None = None, ks: Iterable[int] = (1, 5, 10)
) -> dict[int, float]:
    """{k: fraction of images with one of their texts among the top-k texts}. Every image must
    have at least one text (DataError otherwise: its recall would be undefined)."""
    ks = _ks(ks)
    t2i = _check(similarity, text_to_image)
    n_img, n_txt = similarity.shape
    counts = torch.bincount(t2i, minlength=n_img)
    if n_img and int((counts == 0).sum()):
        raise DataError(
            f"{int((counts == 0).sum())} of {n_img} images have no text; image->text recall "
            "needs at least one text per image"
        )
    maxk = min(max(ks), n_txt)
    top = similarity.topk(maxk, dim=1).indices  # (N_img, maxk) text indices, best first
    hit = t2i[top] == torch.arange(n_img, device=similarity.device)[:, None]  # (N_img, maxk)
    return _hits_at(hit, ks, n_txt)


@torch.no_grad()
def text_to_image_recall(
    similarity: Tensor, text_to_image: Tensor | None = None, ks: Iterable[int] = (1, 5, 10)
) -> dict[int, float]:
    """{k: fraction of texts whose image is among the top-k images}."""
    ks = _ks(ks)
    t2i = _check(similarity, text_to_image)
    n_img = similarity.shape[0]
    maxk = min(max(ks), n_img)
    top = similarity.t().topk(maxk, dim=1).indices  # (N_txt, maxk) image indices, best first
    hit = top == t2i[:, None]  # (N_txt, maxk)
    return _hits_at(hit, ks, n_img)


def retrieval_recall(
    similarity: Tensor, text_to_image: Tensor | None = None, ks: Iterable[int] = (1, 5, 10)
) -> dict[str, float]:
    """Both directions as one dict: ``{"i2t_r1": ..., "i2t_r5": ..., "t2i_r1": ...,
    "mean_recall": ...}`` (``mean_recall`` = the mean of all the recalls, the "RSUM / 6" of
    retrieval papers for ks = 1, 5, 10)."""
    ks = _ks(ks)
    i2t = image_to_text_recall(similarity, text_to_image, ks)
    t2i = text_to_image_recall(similarity, text_to_image, ks)
    out = {f"i2t_r{k}": v for k, v in i2t.items()}
    out.update({f"t2i_r{k}": v for k, v in t2i.items()})
    out["mean_recall"] = sum(out.values()) / len(out)
    return out
