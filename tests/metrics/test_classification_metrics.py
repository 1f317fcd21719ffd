"""Classification metrics against scikit-learn's independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    top_k_accuracy_score,
)

from visionzoo.errors import DataError, VisionZooError
from visionzoo.metrics.classification import ClassificationMetrics, accuracy_topk


def _random_batch(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g)  # continuous: no ties in top-k
    targets = torch.randint(0, k, (n,), generator=g)
    return logits, targets


# sklearn warns that top-3 of 3 classes is trivially 1.0, which is what this case checks.
@pytest.mark.filterwarnings("ignore:'k' .* greater than or equal to 'n_classes'")
@pytest.mark.parametrize("k_classes", [3, 10])
def test_accuracy_topk_matches_sklearn(k_classes):
    logits, targets = _random_batch(200, k_classes)
    # Bias the logits towards the truth so accuracies are far from chance and from 1.
    logits[torch.arange(200), targets] += 0.7
    got = accuracy_topk(logits, targets, ks=(1, 2, 5))
    labels = np.arange(k_classes)
    y, s = targets.numpy(), logits.numpy()
    assert got[1] == pytest.approx(accuracy_score(y, s.argmax(1)))
    assert got[2] == pytest.approx(top_k_accuracy_score(y, s, k=2, labels=labels))
    # k=5 is clipped to the number of classes: for 3 classes it is top-3 = 1.0.
    expected5 = top_k_accuracy_score(y, s, k=min(5, k_classes), labels=labels)
    assert got[5] == pytest.approx(expected5)
    if k_classes == 3:
        assert got[5] == 1.0
    else:
        assert 0.0 < got[5] < 1.0


def test_accuracy_topk_rejects_out_of_range_labels():
    logits = torch.randn(4, 3)
    with pytest.raises(DataError, match=r"label 7 is out of range for 3 classes"):
        accuracy_topk(logits, torch.tensor([0, 1, 7, 2]))
    with pytest.raises(DataError, match=r"label -1 is out of range for 3 classes"):
        accuracy_topk(logits, torch.tensor([0, -1, 2, 2]))


def test_streaming_metrics_match_sklearn_over_batches():
    k = 7
    logits, targets = _random_batch(300, k, seed=1)
    logits[torch.arange(300), targets] += 1.0
    m = ClassificationMetrics(k)
    for lo in range(0, 300, 64):  # uneven last batch
        m.update(logits[lo : lo + 64], targets[lo : lo + 64])
    out = m.compute()
    y, s = targets.numpy(), logits.numpy()
    pred = s.argmax(1)
    cm_ref = confusion_matrix(y, pred, labels=np.arange(k))
    assert isinstance(out["confusion_matrix"], torch.Tensor)
    np.testing.assert_array_equal(out["confusion_matrix"].numpy(), cm_ref)
    assert out["count"] == 300
    assert out["acc1"] == pytest.approx(accuracy_score(y, pred))
    assert out["acc5"] == pytest.approx(top_k_accuracy_score(y, s, k=5, labels=np.arange(k)))
    assert out["mean_class_acc"] == pytest.approx(balanced_accuracy_score(y, pred))
    per_class_ref = cm_ref.diagonal() / cm_ref.sum(1)
    np.testing.assert_allclose(out["per_class_acc"], per_class_ref)
    assert 0.0 < out["acc1"] < out["acc5"] < 1.0


def test_streaming_metrics_accepts_predictions_and_marks_absent_classes():
    m = ClassificationMetrics(4)
    # Class 3 never occurs in the targets: its accuracy is None, and it is out of the mean.
    m.update(torch.tensor([0, 1, 1, 2, 3]), torch.tensor([0, 1, 2, 2, 0]))
    out = m.compute()
    y, p = [0, 1, 2, 2, 0], [0, 1, 1, 2, 3]
    np.testing.assert_array_equal(
        out["confusion_matrix"].numpy(), confusion_matrix(y, p, labels=[0, 1, 2, 3])
    )
    assert out["per_class_acc"] == [0.5, 1.0, 0.5, None]
    assert out["mean_class_acc"] == pytest.approx(2 / 3)
    assert out["acc1"] == pytest.approx(accuracy_score(y, p))
    assert out["acc5"] is None  # top-k needs logits


def test_streaming_metrics_errors_name_the_value():
    m = ClassificationMetrics(5)
    with pytest.raises(DataError, match=r"label 9 is out of range for 5 classes") as info:
        m.update(torch.randn(3, 5), torch.tensor([1, 9, 0]))
    assert isinstance(info.value, VisionZooError)
    with pytest.raises(DataError, match=r"predicts 4 classes but the data has 5"):
        m.update(torch.randn(3, 4), torch.tensor([1, 2, 0]))
    with pytest.raises(DataError, match=r"prediction 5 is out of range"):
        m.update(torch.tensor([5, 0, 0]), torch.tensor([1, 2, 0]))
    assert m.count == 0  # failed updates leave the state untouched


def test_empty_and_reset():
    m = ClassificationMetrics(3)
    out = m.compute()
    assert out["count"] == 0 and math.isnan(out["acc1"]) and math.isnan(out["mean_class_acc"])
    assert out["confusion_matrix"].shape == (3, 3)
    m.update(torch.eye(3), torch.tensor([0, 1, 2]))
    assert m.compute()["acc1"] == 1.0
    m.reset()
    assert m.count == 0
