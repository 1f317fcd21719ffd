"""Detection metrics: VOC AP against a plain-loop transcription of the devkit, VOC AP (area)
against pycocotools' AP50 on data where the two are defined alike, edge cases, DDP gathering."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from visionzoo.errors import DataError
from visionzoo.metrics.detection import (
    DetectionMetrics,
    average_precision,
    coco_evaluate,
    format_per_class_table,
    voc_evaluate,
)

# ---------------------------------------------------------------------------------------------
# An independent, straightforward VOC evaluation: the devkit's VOCevaldet loop, one detection
# at a time, scalar IoU, explicit envelope and 11-point loops.


def _iou(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def reference_voc(preds, targets, num_classes, thr=0.5):
    aps, aps07 = [], []
    for c in range(1, num_classes + 1):
        gts = []
        npos = 0
        for t in targets:
            boxes = [
                b
                for b, lab in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True)
                if lab == c
            ]
            ign = t.get("ignore", torch.zeros(len(t["labels"]), dtype=torch.bool)).tolist()
            diff = [d for d, lab in zip(ign, t["labels"].tolist(), strict=True) if lab == c]
            gts.append({"boxes": boxes, "diff": diff, "det": [False] * len(boxes)})
            npos += sum(1 for d in diff if not d)
        dets = []
        for i, p in enumerate(preds):
            for b, s, lab in zip(
                p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist(), strict=True
            ):
                if lab == c:
                    dets.append((s, i, b))
        dets.sort(key=lambda d: -d[0])  # stable, like MATLAB's sort
        tp, fp = [], []
        for _, i, b in dets:
            ovmax, jmax = -math.inf, -1
            for j, g in enumerate(gts[i]["boxes"]):
                o = _iou(b, g)
                if o > ovmax:
                    ovmax, jmax = o, j
            if ovmax >= thr:
                if gts[i]["diff"][jmax]:
                    continue
                if not gts[i]["det"][jmax]:
                    gts[i]["det"][jmax] = True
                    tp.append(1)
                    fp.append(0)
                else:
                    tp.append(0)
                    fp.append(1)
            else:
                tp.append(0)
                fp.append(1)
        if npos == 0:
            aps.append(math.nan)
            aps07.append(math.nan)
            continue
        rec, prec, ctp, cfp = [], [], 0, 0
        for a, b in zip(tp, fp, strict=True):
            ctp += a
            cfp += b
            rec.append(ctp / npos)
            prec.append(ctp / (ctp + cfp))
        mrec = [0.0, *rec, 1.0]
        mpre = [0.0, *prec, 0.0]
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        aps.append(sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1)))
        ap07 = 0.0
        for k in range(11):
            t = k / 10
            ps = [p for p, r in zip(prec, rec, strict=True) if r >= t]
            ap07 += (max(ps) if ps else 0.0) / 11
        aps07.append(ap07)
    return np.array(aps), np.array(aps07)


def _random_data(seed, n_images=40, num_classes=4, difficult=0.15):
    """Overlapping ground truths, difficult boxes, duplicates, misses, false positives, and a
    few tied scores: every branch of the VOC rules."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(n_images):
        g = int(rng.integers(0, 6))
        xy = rng.uniform(0, 80, (g, 2))
        wh = rng.uniform(8, 40, (g, 2))
        gt = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(1, num_classes + 1, g)
        ignore = rng.random(g) < difficult
        boxes, scores, dlab = [], [], []
        for b, lab in zip(gt, labels, strict=True):
            for _ in range(int(rng.integers(0, 3))):  # 0: a miss, 2: a duplicate
                boxes.append(b + rng.normal(0, 4, 4))
                scores.append(rng.random())
                dlab.append(lab if rng.random() < 0.9 else rng.integers(1, num_classes + 1))
        for _ in range(int(rng.integers(0, 4))):  # background false positives
            p = rng.uniform(0, 90, 2)
            boxes.append(np.concatenate([p, p + rng.uniform(5, 30, 2)]))
            scores.append(rng.random() * 0.6)
            dlab.append(rng.integers(1, num_classes + 1))
        if len(scores) >= 2:
            scores[1] = scores[0]  # a tie: order must follow the input (stable sort)
        preds.append(
            {
                "boxes": torch.tensor(np.array(boxes).reshape(-1, 4), dtype=torch.float32),
                "scores": torch.tensor(scores, dtype=torch.float32),
                "labels": torch.tensor(np.array(dlab, dtype=np.int64)),
            }
        )
        targets.append(
            {
                "boxes": torch.tensor(gt, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "ignore": torch.tensor(ignore),
            }
        )
    return preds, targets


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_voc_ap_matches_plain_loop_reference(seed):
    preds, targets = _random_data(seed)
    got = voc_evaluate(preds, targets, num_classes=4)
    # The reference works on the same float32 values, in float64 like ours.
    ref_ap, ref_ap07 = reference_voc(preds, targets, 4)
    np.testing.assert_allclose(got["ap"], ref_ap, rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got["ap07"], ref_ap07, rtol=0, atol=1e-12, equal_nan=True)
    assert np.isfinite(got["ap"]).sum() >= 3  # the data exercise real classes


def test_average_precision_by_hand():
    # Points (recall, precision): (0.5, 1), (0.5, 0.5), (1, 2/3).
    rec, prec = np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])
    # Area: envelope 1 up to recall 0.5, then 2/3 -> 0.5 * 1 + 0.5 * 2/3.
    assert average_precision(rec, prec, "area") == pytest.approx(0.5 + 1 / 3)
    # 11-point: r = 0..0.5 (6 points) -> 1; r = 0.6..1 (5 points) -> 2/3.
    assert average_precision(rec, prec, "11point") == pytest.approx((6 + 5 * 2 / 3) / 11)
    # Recall 0.3 = 3/10 exactly reaches the 0.3 threshold.
    assert average_precision(np.array([0.3]), np.array([1.0]), "11point") == pytest.approx(4 / 11)
    assert average_precision(np.array([]), np.array([]), "area") == 0.0
    with pytest.raises(ValueError, match="area"):
        average_precision(rec, prec, "101point")


def _agreement_data(seed=0, n_images=400, num_classes=3):
    """Ground truths of one image sit in separate quadrants, so no detection can reach IoU 0.5
    with two of them: VOC's "best ground truth, taken or not" and COCO's "best untaken ground
    truth" then make the same matches. No ignored boxes, < 100 detections per image and class,
    distinct scores. What is left is the interpolation (area vs 101 recall points), which many
    detections per class make small."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(n_images):
        gt, labels = [], []
        boxes, scores, dlab = [], [], []
        for q in range(4):
            if rng.random() < 0.25:
                continue
            ox, oy = 100.0 * (q % 2), 100.0 * (q // 2)
            wh = rng.uniform(20, 60, 2)
            xy = np.array([ox, oy]) + rng.uniform(5, 95 - wh)
            b = np.concatenate([xy, xy + wh])
            lab = int(rng.integers(1, num_classes + 1))
            gt.append(b)
            labels.append(lab)
            quality = rng.random()
            if rng.random() < 0.85:  # a detection whose box and score both follow quality
                boxes.append(b + rng.normal(0, 1 + 10 * (1 - quality), 4))
                scores.append(0.3 + 0.7 * quality * rng.uniform(0.7, 1.0))
                dlab.append(lab)
            if rng.random() < 0.2:  # a duplicate
                boxes.append(b + rng.normal(0, 3, 4))
                scores.append(rng.uniform(0.0, 0.6))
                dlab.append(lab)
        for _ in range(int(rng.integers(0, 3))):  # false positives
            p = rng.uniform(0, 170, 2)
            boxes.append(np.concatenate([p, p + rng.uniform(10, 30, 2)]))
            scores.append(rng.uniform(0.0, 0.8))
            dlab.append(int(rng.integers(1, num_classes + 1)))
        b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
        b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1)  # keep every box proper
        preds.append(
            {
                "boxes": torch.tensor(b),
                "scores": torch.tensor(scores, dtype=torch.float64),
                "labels": torch.tensor(dlab, dtype=torch.int64),
            }
        )
        targets.append(
            {
                "boxes": torch.tensor(np.array(gt).reshape(-1, 4)),
                "labels": torch.tensor(labels, dtype=torch.int64),
            }
        )
    return preds, targets


def test_voc_area_ap_agrees_with_pycocotools_ap50():
    preds, targets = _agreement_data()
    voc = voc_evaluate(preds, targets, 3)
    coco = coco_evaluate(preds, targets, 3)
    assert np.all((voc["ap"] > 0.3) & (voc["ap"] < 0.95))  # neither trivial nor perfect
    np.testing.assert_allclose(voc["ap"], coco["ap50"], atol=0.01)
    assert abs(np.mean(voc["ap"]) - coco["stats"]["mAP50"]) <= 0.01
    # Same matches: AP at IoU 0.5 differs only through interpolation, not by chance.
    assert abs(np.mean(voc["ap"]) - coco["stats"]["mAP50"]) > 0


def test_perfect_predictions_score_one():
    preds, targets = _agreement_data(seed=1, n_images=30)
    perfect = [
        {"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))}
        for t in targets
    ]
    m = DetectionMetrics(3, ["a", "b", "c"])
    m.update(perfect, targets)
    out = m.compute()
    for key in ("mAP", "mAP50", "mAP75", "voc_AP50", "voc07_AP50", "AP/a", "voc_AP50/c"):
        assert out[key] == pytest.approx(1.0), key
    assert m.count == 30


def test_no_predictions_give_zero():
    _, targets = _agreement_data(seed=2, n_images=10)
    empty = [
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0).long()}
        for _ in targets
    ]
    m = DetectionMetrics(3)
    m.update(empty, targets)
    out = m.compute()
    assert out["mAP"] == 0.0 and out["mAP50"] == 0.0
    assert out["voc_AP50"] == 0.0 and out["voc07_AP50"] == 0.0


def _one(boxes, labels, scores=None, **flags):
    d = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    if scores is not None:
        d["scores"] = torch.tensor(scores, dtype=torch.float32)
    for k, v in flags.items():
        d[k] = torch.tensor(v, dtype=torch.bool)
    return d


def test_class_without_ground_truth_is_nan_and_left_out():
    # Class 2 has detections but no ground truth: NaN, not in the means; class 1 is perfect.
    target = _one([[0, 0, 10, 10]], [1])
    pred = _one([[0, 0, 10, 10], [50, 50, 60, 60]], [1, 2], [0.9, 0.99])
    m = DetectionMetrics(2, ["one", "two"])
    m.update([pred], [target])
    out = m.compute()
    assert math.isnan(out["voc_AP50/two"]) and math.isnan(out["AP50/two"])
    assert out["voc_AP50"] == 1.0 and out["mAP50"] == pytest.approx(1.0)
    assert m.per_class[1] == {
        "class": "two",
        "num_gt": 0,
        "AP": pytest.approx(math.nan, nan_ok=True),
        "AP50": pytest.approx(math.nan, nan_ok=True),
        "AP75": pytest.approx(math.nan, nan_ok=True),
        "voc_AP50": pytest.approx(math.nan, nan_ok=True),
        "voc07_AP50": pytest.approx(math.nan, nan_ok=True),
    }
    table = format_per_class_table(m.per_class)
    assert "| two | 0 | - | - | - | - | - |" in table and "| one | 1 | 1.0000" in table


def test_detections_on_ignored_boxes_count_nowhere():
    # A difficult box with the top-scoring detection on it, and a normal box found second:
    # without the ignore rule the first detection would be a false positive (AP 0.5).
    target = _one([[0, 0, 20, 20], [50, 50, 80, 80]], [1, 1], ignore=[True, False])
    pred = _one([[0, 0, 20, 20], [50, 50, 80, 80]], [1, 1], [0.9, 0.8])
    voc = voc_evaluate([pred], [target], 1)
    coco = coco_evaluate([pred], [target], 1)
    assert voc["ap"][0] == 1.0 and voc["num_gt"][0] == 1
    assert coco["ap50"][0] == pytest.approx(1.0)
    unflagged = dict(target, ignore=torch.tensor([False, False]))
    assert voc_evaluate([pred], [unflagged], 1)["ap"][0] == 1.0  # both found: still 1
    lone = _one([[0, 0, 20, 20]], [1], [0.9])  # only the difficult one found
    assert voc_evaluate([lone], [target], 1)["ap"][0] == 0.0


def test_all_ground_truth_ignored_gives_nan():
    target = _one([[0, 0, 20, 20]], [1], ignore=[True])
    pred = _one([[0, 0, 20, 20]], [1], [0.9])
    m = DetectionMetrics(1)
    m.update([pred], [target])
    out = m.compute()
    assert math.isnan(out["voc_AP50"]) and math.isnan(out["mAP"]) and math.isnan(out["mAP50"])


def test_crowd_regions_follow_coco():
    # Small detections inside a crowd region: COCO ignores them (intersection over the
    # detection's area); the real box is found, so COCO AP50 is 1.
    target = _one(
        [[0, 0, 100, 100], [150, 150, 180, 180]],
        [1, 1],
        iscrowd=[True, False],
        ignore=[True, False],
    )
    pred = _one(
        [[10, 10, 30, 30], [40, 40, 60, 60], [150, 150, 180, 180]], [1, 1, 1], [0.95, 0.9, 0.5]
    )
    coco = coco_evaluate([pred], [target], 1)
    assert coco["ap50"][0] == pytest.approx(1.0)
    # VOC has no crowds: there the ignored box only absorbs a detection with IoU >= 0.5.
    assert voc_evaluate([pred], [target], 1)["ap"][0] == pytest.approx(1 / 3)


def test_empty_metric_and_images_without_boxes():
    m = DetectionMetrics(2)
    out = m.compute()
    assert math.isnan(out["mAP"]) and math.isnan(out["voc_AP50"])
    # An image with neither boxes nor detections changes nothing; one with only detections
    # adds false positives.
    target, pred = _one([[0, 0, 10, 10]], [1]), _one([[0, 0, 10, 10]], [1], [0.5])
    nothing = _one([], [], [])
    fp_only = _one([[0, 0, 10, 10]], [1], [0.9])
    m.update([pred, nothing], [target, _one([], [])])
    assert m.compute()["voc_AP50"] == 1.0
    m.reset()
    m.update([pred, fp_only], [target, _one([], [])])
    assert m.compute()["voc_AP50"] == pytest.approx(0.5)


def test_input_errors():
    m = DetectionMetrics(2)
    good_t = _one([[0, 0, 10, 10]], [1])
    with pytest.raises(DataError, match="predicted label 3 is out of range for 2 classes"):
        m.update([_one([[0, 0, 10, 10]], [3], [0.5])], [good_t])
    with pytest.raises(DataError, match="ground-truth label 0 is out of range"):
        m.update([_one([], [], [])], [_one([[0, 0, 10, 10]], [0])])
    with pytest.raises(ValueError, match="1 predictions for 2 targets"):
        m.update([_one([], [], [])], [good_t, good_t])
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        m.update([_one([[0, 0, 1, 1], [0, 0, 2, 2]], [1, 1], [0.5])], [good_t])
    with pytest.raises(ValueError, match="num_classes"):
        DetectionMetrics(0)
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        DetectionMetrics(3, ["a", "b"])


def test_pycocotools_output_is_captured(capsys):
    preds, targets = _agreement_data(seed=3, n_images=5)
    m = DetectionMetrics(3)
    m.update(preds, targets)
    m.compute()
    assert capsys.readouterr().out == ""
    assert "Average Precision" in m.summary


# ---------------------------------------------------------------------------------------------
# DDP: two gloo processes, each with half the images plus a padded duplicate.


def _ddp_worker(rank, world, init_file, shards, result_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        m = DetectionMetrics(3)
        preds, targets = shards[rank]
        m.update(preds, targets)
        m.sync()
        out = m.compute()
        if rank == 0:
            torch.save({k: v for k, v in out.items() if "/" not in k}, result_file)
    finally:
        dist.destroy_process_group()


def test_sync_gathers_ranks_and_drops_padding(tmp_path):
    preds, targets = _agreement_data(seed=4, n_images=12)
    for i, t in enumerate(targets):
        t["image_id"] = torch.tensor(i)
    # Rank 0: images 0, 2, 4, ...; rank 1: 1, 3, ..., then image 0 again (sampler padding).
    shards = [
        ([preds[i] for i in range(0, 12, 2)], [targets[i] for i in range(0, 12, 2)]),
        (
            [preds[i] for i in [*range(1, 12, 2), 0]],
            [targets[i] for i in [*range(1, 12, 2), 0]],
        ),
    ]
    result = tmp_path / "out.pt"
    # fork: the children inherit the imported modules (spawn would re-import torch twice).
    mp.start_processes(
        _ddp_worker,
        args=(2, str(tmp_path / "init"), shards, str(result)),
        nprocs=2,
        start_method="fork",
    )
    got = torch.load(result)
    single = DetectionMetrics(3)
    single.update(preds, targets)
    want = {k: v for k, v in single.compute().items() if "/" not in k}
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], nan_ok=True), k
