"""visionzoo.losses.contrastive: CLIP's symmetric InfoNCE against an explicit loop, and the
cross-rank gather (2 gloo processes on CPU) against the single-process loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from visionzoo.errors import VisionZooError
from visionzoo.losses.contrastive import CLIPLoss, clip_loss, gather_features


def features(n: int, e: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n, e, generator=g), dim=-1)
    texts = F.normalize(torch.randn(n, e, generator=g), dim=-1)
    return images, texts


def loop_loss(images: torch.Tensor, texts: torch.Tensor, scale: float) -> float:
    """The paper's loss written out: -log softmax of each row and each column at the diagonal."""
    n = images.shape[0]
    sims = [[scale * float(images[i] @ texts[j]) for j in range(n)] for i in range(n)]
    total = 0.0
    for i in range(n):
        row = sims[i]
        total += -(row[i] - math.log(sum(math.exp(v) for v in row)))
        col = [sims[j][i] for j in range(n)]
        total += -(col[i] - math.log(sum(math.exp(v) for v in col)))
    return total / (2 * n)


def test_equals_explicit_loop():
    images, texts = features(6)
    for scale in (1.0, 1 / 0.07, 100.0):
        got = clip_loss(images, texts, torch.tensor(scale))
        assert got.ndim == 0
        assert abs(got.item() - loop_loss(images, texts, scale)) < 1e-4
    # Not symmetric in general: swapping the roles of the inputs gives the same value (the two
    # directions are averaged), but a permuted pairing changes it.
    assert torch.allclose(clip_loss(texts, images, 5.0), clip_loss(images, texts, 5.0))
    assert not torch.allclose(
        clip_loss(images, texts.roll(1, 0), 5.0), clip_loss(images, texts, 5.0)
    )


def test_gradients_and_module_form():
    images, texts = features(5)
    images.requires_grad_(True)
    scale = torch.tensor(10.0, requires_grad=True)
    loss = CLIPLoss()(images, texts, scale)
    loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert scale.grad is not None and scale.grad != 0
    # Without a process group, gather is a no-op.
    (gi, gt), offset = gather_features(images, texts)
    assert gi is images and gt is texts and offset == 0


def test_shape_errors():
    images, texts = features(4)
    with pytest.raises(
        VisionZooError, match=r"Tensor\[n, E\] of one shape, got \(4, 8\) and \(3, 8\)"
    ):
        clip_loss(images, texts[:3], 1.0)


# --- two ranks -----------------------------------------------------------------------------------


def _rank_worker(rank: int, world: int, init_file: str, out_dir: str, splits: list) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = []
        for sizes in splits:
            images, texts = features(sum(sizes))
            start = sum(sizes[:rank])
            local_i = images[start : start + sizes[rank]].clone().requires_grad_(True)
            local_t = texts[start : start + sizes[rank]].clone().requires_grad_(True)
            loss = clip_loss(local_i, local_t, torch.tensor(7.0))  # gather=None -> gathers
            loss.backward()
            results.append((loss.detach(), local_i.grad, local_t.grad))
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_rank_gather_equals_single_process(tmp_path):
    splits = [[4, 4], [3, 2]]  # equal batches, and a short last batch on rank 1
    mp.spawn(
        _rank_worker,
        args=(2, str(tmp_path / "init"), str(tmp_path), splits),
        nprocs=2,
        join=True,
    )
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for case, sizes in enumerate(splits):
        images, texts = features(sum(sizes))
        images.requires_grad_(True)
        texts.requires_grad_(True)
        full = clip_loss(images, texts, torch.tensor(7.0))
        full.backward()
        # Each rank's loss is the mean over its rows: weighted by rows they give the full loss.
        losses = [per_rank[r][case][0] for r in range(2)]
        combined = sum(loss * n for loss, n in zip(losses, sizes, strict=True)) / sum(sizes)
        assert abs(combined.item() - full.item()) < 1e-5
        if sizes[0] == sizes[1]:
            # With equal batches every rank's features get W x the full loss's gradient (the
            # sum of all ranks' losses); DDP's averaging over W ranks then gives the exact one.
            grad_i = torch.cat([per_rank[r][case][1] for r in range(2)])
            grad_t = torch.cat([per_rank[r][case][2] for r in range(2)])
            assert torch.allclose(grad_i, 2 * images.grad, atol=1e-6)
            assert torch.allclose(grad_t, 2 * texts.grad, atol=1e-6)
        else:
            # Unequal batches: the gradient is that of sum_r mean_{rows of r}, computed here.
            images.grad = texts.grad = None
            target = sum(
                clip_loss_rows(images, texts, 7.0, sum(sizes[:r]), sizes[r]) for r in range(2)
            )
            target.backward()
            grad_i = torch.cat([per_rank[r][case][1] for r in range(2)])
            assert torch.allclose(grad_i, images.grad, atol=1e-6)


def clip_loss_rows(images, texts, scale, start, n):
    """The loss of rows start..start+n against every column (one rank's local loss)."""
    labels = torch.arange(start, start + n)
    li = scale * images[start : start + n] @ texts.t()
    lt = scale * texts[start : start + n] @ images.t()
    return (F.cross_entropy(li, labels) + F.cross_entropy(lt, labels)) / 2


def test_hard_negative_texts_extend_image_to_text_only():
    images, texts = features(5)
    negatives = F.normalize(torch.randn(7, 8, generator=torch.Generator().manual_seed(3)), dim=-1)
    scale = 6.0
    got = clip_loss(images, texts, scale, negative_text_features=negatives)
    # Written out: image i against its text, every other text and every negative; text j
    # against the images only.
    total = 0.0
    for i in range(5):
        row = [scale * float(images[i] @ t) for t in torch.cat([texts, negatives])]
        total += -(row[i] - math.log(sum(math.exp(v) for v in row)))
        col = [scale * float(texts[i] @ im) for im in images]
        total += -(col[i] - math.log(sum(math.exp(v) for v in col)))
    assert abs(got.item() - total / 10) < 1e-5
    # An empty set of negatives is the paper's loss; negatives only raise the loss.
    assert torch.allclose(
        clip_loss(images, texts, scale, negative_text_features=negatives[:0]),
        clip_loss(images, texts, scale),
    )
    assert got > clip_loss(images, texts, scale)
    with pytest.raises(VisionZooError, match=r"negative_text_features must be Tensor\[m, E\]"):
        clip_loss(images, texts, scale, negative_text_features=torch.zeros(3, 4))


def test_logits_stay_float32_under_bf16_autocast():
    # bf16 features (as a bf16 autocast forward gives) are scored in float32: the loss equals the
    # float32 loss of the same (rounded) features, not a bf16 matmul's.
    images, texts = features(16, e=32, seed=3)
    negatives = F.normalize(torch.randn(8, 32, generator=torch.Generator().manual_seed(4)), dim=-1)
    bi, bt, bn = images.bfloat16(), texts.bfloat16(), negatives.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = clip_loss(bi, bt, torch.tensor(100.0), negative_text_features=bn)
    want = clip_loss(bi.float(), bt.float(), torch.tensor(100.0), negative_text_features=bn.float())
    assert got.dtype == torch.float32
    assert abs(got.item() - want.item()) < 1e-5
    # float64 inputs are not downcast.
    assert clip_loss(images.double(), texts.double(), 10.0).dtype == torch.float64
