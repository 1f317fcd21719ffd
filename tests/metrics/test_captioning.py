"""Captioning metrics: pycocoevalcap's BLEU/CIDEr on our tokenisation."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from visionzoo.errors import DataError
from visionzoo.metrics.captioning import caption_scores, tokenize_caption


def test_tokenize():
    assert tokenize_caption("A Red circle, left of  a blue-square.") == (
        "a red circle left of a blue square"
    )


def test_perfect_and_wrong_captions():
    refs = [["a red circle"], ["a small blue square left of a green star"]]
    perfect = caption_scores(["A red circle.", "a small blue square left of a green star"], refs)
    assert perfect["BLEU-1"] == pytest.approx(1.0) and perfect["BLEU-4"] > 0.99
    wrong = caption_scores(["the the the", "nothing here at all"], refs)
    assert wrong["BLEU-1"] < 0.01 and wrong["CIDEr"] < perfect["CIDEr"]


def test_bleu1_matches_independent_corpus_computation():
    preds = ["a red circle left of a square", "a green star", "a big blue hexagon"]
    refs = [
        ["a red circle left of a blue square", "a red circle"],
        ["a green star"],
        ["a large blue hexagon above a cross", "a blue hexagon"],
    ]
    # Corpus BLEU-1: clipped unigram matches / candidate words, times the brevity penalty with
    # the closest reference length per sentence.
    match = total = cand_len = ref_len = 0
    for p, rs in zip(preds, refs, strict=True):
        pw = p.split()
        counts = Counter(pw)
        max_ref = Counter()
        for r in rs:
            for w, c in Counter(r.split()).items():
                max_ref[w] = max(max_ref[w], c)
        match += sum(min(c, max_ref[w]) for w, c in counts.items())
        total += len(pw)
        cand_len += len(pw)
        ref_len += min((abs(len(r.split()) - len(pw)), len(r.split())) for r in rs)[1]
    bp = 1.0 if cand_len > ref_len else math.exp(1 - ref_len / cand_len)
    assert caption_scores(preds, refs)["BLEU-1"] == pytest.approx(bp * match / total, abs=1e-6)


def test_errors():
    with pytest.raises(DataError, match="2 predicted captions for 1 reference"):
        caption_scores(["a", "b"], [["a"]])
    with pytest.raises(DataError, match="image 0 has no reference"):
        caption_scores(["a"], [[" "]])
