"""Segmentation metrics against an independent per-class loop, scikit-learn's jaccard_score /
f1_score and torchmetrics (a dev dependency), with ignore pixels; shard merging and a real
two-process gloo all_reduce."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from visionzoo.errors import DataError
from visionzoo.metrics.segmentation import (
    SegmentationMetrics,
    confusion_matrix,
    merge_confusion_matrices,
    scores,
)

IGNORE = 255


def _batches(k: int, n_batches: int = 3, seed: int = 0, absent: int | None = None):
    """Random (logits, target) batches with ~15% ignore pixels; predictions biased to the truth.

    ``absent``: a class that appears in neither targets nor predictions.
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        target = torch.randint(0, k, (2, 13, 17), generator=g)
        logits = torch.randn(2, k, 13, 17, generator=g)
        logits.scatter_add_(1, target.unsqueeze(1), torch.full((2, 1, 13, 17), 1.0))
        if absent is not None:
            target[target == absent] = (absent + 1) % k
            logits[:, absent] = -1e4
        target[torch.rand(2, 13, 17, generator=g) < 0.15] = IGNORE
        out.append((logits, target))
    return out


def _loop_reference(batches, k: int) -> dict:
    """Per-class counts by explicit loops over classes, on the flattened non-ignored pixels."""
    preds = np.concatenate([lg.argmax(1).numpy().ravel() for lg, _ in batches])
    truth = np.concatenate([t.numpy().ravel() for _, t in batches])
    keep = truth != IGNORE
    preds, truth = preds[keep], truth[keep]
    iou, dice = [], []
    for c in range(k):
        tp = int(np.sum((preds == c) & (truth == c)))
        fp = int(np.sum((preds == c) & (truth != c)))
        fn = int(np.sum((preds != c) & (truth == c)))
        if tp + fp + fn == 0:
            iou.append(None)
            dice.append(None)
        else:
            iou.append(tp / (tp + fp + fn))
            dice.append(2 * tp / (2 * tp + fp + fn))
    present = [v for v in iou if v is not None]
    return {
        "IoU": iou,
        "Dice": dice,
        "mIoU": sum(present) / len(present),
        "mDice": sum(v for v in dice if v is not None) / len(present),
        "pixel_acc": float(np.mean(preds == truth)),
        "preds": preds,
        "truth": truth,
    }


def _approx_list(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert (a is None and b is None) or a == pytest.approx(b, rel=1e-12)


@pytest.mark.parametrize("absent", [None, 2])
def test_streaming_metrics_match_a_per_class_loop(absent):
    k = 5
    batches = _batches(k, absent=absent)
    metric = SegmentationMetrics(k)
    for logits, target in batches:
        metric.update(logits, target)
    got = metric.compute()
    ref = _loop_reference(batches, k)
    _approx_list(got["IoU"], ref["IoU"])
    _approx_list(got["Dice"], ref["Dice"])
    assert got["mIoU"] == pytest.approx(ref["mIoU"], rel=1e-12)
    assert got["mDice"] == pytest.approx(ref["mDice"], rel=1e-12)
    assert got["pixel_acc"] == pytest.approx(ref["pixel_acc"], rel=1e-12)
    assert got["count"] == len(ref["truth"])
    assert 0.0 < got["mIoU"] < got["mDice"] < 1.0  # Dice >= IoU, and neither trivial
    if absent is not None:
        assert got["IoU"][absent] is None and got["Dice"][absent] is None


def test_metrics_match_sklearn_where_it_applies():
    k = 6
    batches = _batches(k, seed=3)
    metric = SegmentationMetrics(k)
    for logits, target in batches:
        metric.update(logits, target)
    got = metric.compute()
    ref = _loop_reference(batches, k)
    # Imported here, not at the top: the gloo test's spawned workers import this module.
    from sklearn.metrics import accuracy_score, f1_score, jaccard_score
    from sklearn.metrics import confusion_matrix as sk_confusion

    labels = list(range(k))
    iou = jaccard_score(ref["truth"], ref["preds"], labels=labels, average=None)
    f1 = f1_score(ref["truth"], ref["preds"], labels=labels, average=None)
    np.testing.assert_allclose(got["IoU"], iou, rtol=1e-12)
    np.testing.assert_allclose(got["Dice"], f1, rtol=1e-12)  # Dice = F1 per class
    assert got["mIoU"] == pytest.approx(float(np.mean(iou)), rel=1e-12)
    assert got["pixel_acc"] == pytest.approx(accuracy_score(ref["truth"], ref["preds"]))
    expected_cm = sk_confusion(ref["truth"], ref["preds"], labels=labels)
    np.testing.assert_array_equal(got["confusion_matrix"].numpy(), expected_cm)


def test_labels_and_logits_give_the_same_metrics():
    batches = _batches(4, seed=5)
    from_logits, from_labels = SegmentationMetrics(4), SegmentationMetrics(4)
    for logits, target in batches:
        from_logits.update(logits, target)
        from_labels.update(logits.argmax(1).to(torch.uint8), target.to(torch.uint8))
    assert torch.equal(from_logits.confusion_matrix(), from_labels.confusion_matrix())


def test_class_only_in_prediction_counts_with_iou_zero():
    target = torch.tensor([[[0, 0, 1, IGNORE]]])
    pred = torch.tensor([[[0, 2, 1, 2]]])  # class 2 predicted once (pixel 4 is ignored)
    metric = SegmentationMetrics(4)
    metric.update(pred, target)
    got = metric.compute()
    assert got["IoU"] == [0.5, 1.0, 0.0, None]
    assert got["Dice"] == [pytest.approx(2 / 3), 1.0, 0.0, None]
    assert got["mIoU"] == pytest.approx(0.5)
    assert got["pixel_acc"] == pytest.approx(2 / 3)


def test_empty_metric_is_nan_not_an_error():
    got = SegmentationMetrics(3).compute()
    assert math.isnan(got["mIoU"]) and math.isnan(got["pixel_acc"]) and got["count"] == 0
    assert got["IoU"] == [None, None, None]


def test_out_of_range_values_raise_data_errors():
    metric = SegmentationMetrics(3)
    with pytest.raises(DataError, match=r"mask value 7 is out of range for 3 classes"):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 7], [1, 255]]]))
    with pytest.raises(DataError, match=r"predicted class 3 is out of range"):
        metric.update(torch.tensor([[[0, 3]]]), torch.tensor([[[0, 1]]]))
    with pytest.raises(DataError, match="the model predicts 4 classes but the metric counts 3"):
        metric.update(torch.randn(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="differ in shape"):
        metric.update(
            torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="ignore_index 1 is a valid class"):
        SegmentationMetrics(3, ignore_index=1)
    # A prediction outside [0, K) at an ignored pixel does not matter.
    metric.update(torch.tensor([[[9, 1]]]), torch.tensor([[[255, 1]]]))
    assert metric.compute()["count"] == 1


def test_merge_of_shards_equals_the_whole():
    k = 4
    batches = _batches(k, n_batches=4, seed=7)
    whole, shards = SegmentationMetrics(k), [SegmentationMetrics(k), SegmentationMetrics(k)]
    for i, (logits, target) in enumerate(batches):
        whole.update(logits, target)
        shards[i % 2].update(logits, target)
    merged = merge_confusion_matrices(s.confusion_matrix() for s in shards)
    assert torch.equal(merged, whole.confusion_matrix())
    shards[0].merge(shards[1])
    assert shards[0].compute()["mIoU"] == whole.compute()["mIoU"]
    assert scores(merged)["mIoU"] == whole.compute()["mIoU"]


def test_confusion_matrix_rows_are_truth_columns_prediction():
    cm = confusion_matrix(torch.tensor([1, 1, 0, 2]), torch.tensor([0, 1, 0, 255]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_sync_is_a_no_op_without_a_process_group():
    metric = SegmentationMetrics(2)
    metric.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 1]]]))
    metric.sync()
    assert metric.compute()["count"] == 2  # not initialised: nothing summed, still updatable
    metric.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 1]]]))
    assert metric.compute()["count"] == 4


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        metric = SegmentationMetrics(4)
        for i, (logits, target) in enumerate(_batches(4, n_batches=4, seed=11)):
            if i % world == rank:  # each rank sees its shard only
                metric.update(logits, target)
        metric.sync()
        metric.sync()  # idempotent: a second call must not sum again
        torch.save(metric.confusion_matrix(), f"{out_dir}/rank{rank}.pt")
        with pytest.raises(RuntimeError, match="reset"):
            metric.update(*_batches(4, n_batches=1)[0])
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_sync_all_reduces_across_two_gloo_processes(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    whole = SegmentationMetrics(4)
    for logits, target in _batches(4, n_batches=4, seed=11):
        whole.update(logits, target)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(got, whole.confusion_matrix())


def test_agrees_with_torchmetrics():
    import torchmetrics.classification as tm  # the dev extra installs it

    k, absent = 6, 4
    batches = _batches(k, n_batches=4, seed=3, absent=absent)
    ours = SegmentationMetrics(k, ignore_index=IGNORE)
    jac = tm.MulticlassJaccardIndex(k, average=None, ignore_index=IGNORE)
    f1 = tm.MulticlassF1Score(k, average=None, ignore_index=IGNORE, multidim_average="global")
    acc = tm.MulticlassAccuracy(k, average="micro", ignore_index=IGNORE)
    for logits, target in batches:
        ours.update(logits, target)
        pred = logits.argmax(1)
        jac.update(pred, target)
        f1.update(pred, target)
        acc.update(pred, target)
    out = ours.compute()
    t_iou, t_f1 = jac.compute(), f1.compute()
    for c in range(k):
        if c == absent:
            # torchmetrics scores a class absent from both as 0; we leave it out (None).
            assert out["IoU"][c] is None and out["Dice"][c] is None
            continue
        assert out["IoU"][c] == pytest.approx(float(t_iou[c]), abs=1e-6)
        assert out["Dice"][c] == pytest.approx(float(t_f1[c]), abs=1e-6)
    present = [c for c in range(k) if c != absent]
    assert out["mIoU"] == pytest.approx(float(t_iou[present].mean()), abs=1e-6)
    assert out["pixel_acc"] == pytest.approx(float(acc.compute()), abs=1e-6)
