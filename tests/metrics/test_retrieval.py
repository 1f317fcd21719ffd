"""visionzoo.metrics.retrieval: recall@k both ways against an explicit loop, errors."""

from __future__ import annotations

import pytest
import torch

from visionzoo.errors import DataError
from visionzoo.metrics.retrieval import (
    image_to_text_recall,
    retrieval_recall,
    text_to_image_recall,
)


def loop_recalls(sim: torch.Tensor, t2i: list[int], k: int) -> tuple[float, float]:
    n_img, n_txt = sim.shape
    i2t_hits = 0
    for i in range(n_img):
        ranked = sorted(range(n_txt), key=lambda j: -float(sim[i, j]))[:k]
        i2t_hits += any(t2i[j] == i for j in ranked)
    t2i_hits = 0
    for j in range(n_txt):
        ranked = sorted(range(n_img), key=lambda i: -float(sim[i, j]))[:k]
        t2i_hits += t2i[j] in ranked
    return i2t_hits / n_img, t2i_hits / n_txt


def test_many_captions_per_image_equal_loop():
    torch.manual_seed(0)
    t2i = [0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 6, 6, 7]  # 8 images, 1-3 captions each
    sim = torch.randn(8, len(t2i))  # continuous: no ties
    for k in (1, 2, 5):
        want_i2t, want_t2i = loop_recalls(sim, t2i, k)
        assert image_to_text_recall(sim, torch.tensor(t2i), ks=(k,))[k] == pytest.approx(want_i2t)
        assert text_to_image_recall(sim, torch.tensor(t2i), ks=(k,))[k] == pytest.approx(want_t2i)
    both = retrieval_recall(sim, torch.tensor(t2i), ks=(1, 5))
    assert set(both) == {"i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "mean_recall"}
    assert both["mean_recall"] == pytest.approx(
        (both["i2t_r1"] + both["i2t_r5"] + both["t2i_r1"] + both["t2i_r5"]) / 4
    )


def test_matched_pairs_and_clipped_k():
    sim = torch.eye(4) + 0.01 * torch.arange(16.0).reshape(4, 4)
    assert retrieval_recall(sim, ks=(1,)) == {"i2t_r1": 1.0, "t2i_r1": 1.0, "mean_recall": 1.0}
    # Reversed scores: the right text is last; k = 10 > 4 candidates is clipped to 4.
    rec = image_to_text_recall(-sim, ks=(1, 3, 10))
    assert rec == {1: 0.0, 3: 0.0, 10: 1.0}


def test_errors():
    with pytest.raises(DataError, match="pass text_to_image"):
        retrieval_recall(torch.randn(3, 5))
    with pytest.raises(DataError, match=r"must be Tensor\[N_img, N_txt\]"):
        retrieval_recall(torch.randn(3))
    with pytest.raises(DataError, match="1 of 3 images have no text"):
        image_to_text_recall(torch.randn(3, 3), torch.tensor([0, 0, 1]))
    with pytest.raises(DataError, match=r"outside \[0, 3\)"):
        text_to_image_recall(torch.randn(3, 2), torch.tensor([0, 3]))
    with pytest.raises(DataError, match=r"text_to_image must be Tensor\[2\]"):
        text_to_image_recall(torch.randn(3, 2), torch.tensor([0.0, 1.0]))
    with pytest.raises(DataError, match="ks must be positive"):
        retrieval_recall(torch.randn(2, 2), ks=(0,))
