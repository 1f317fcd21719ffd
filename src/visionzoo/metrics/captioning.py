"""Captioning metrics: BLEU-4 (Papineni et al., ACL 2002) and CIDEr-D (Vedantam et
al., arXiv:1411.5726) through ``pycocoevalcap``, the COCO caption evaluation code.

The COCO server tokenises with the Stanford PTB tokenizer, a Java program; to stay free of a
Java runtime we tokenise the same way for what captions here contain: lower case, punctuation
removed (PTB's tokenizer drops the same punctuation marks before scoring), words split on
white space. Scores are then computed by pycocoevalcap's own ``Bleu(4)`` and ``Cider``.

CIDEr's IDF comes from the reference set being scored, so it is only comparable between runs
on the same validation set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import DataError

__all__ = ["tokenize_caption", "caption_scores"]

_PUNCT = re.compile(r"[^\w\s]")


def tokenize_caption(text: str) -> str:
    """Lower case, punctuation removed, single spaces."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def caption_scores(
    predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> dict[str, float]:
    """``{"BLEU-1".."BLEU-4", "CIDEr"}`` of ``predictions[i]`` against ``references[i]`` (one or
    more reference captions per image). Corpus-level BLEU, as the COCO evaluation reports."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if len(predictions) != len(references):
        raise DataError(
            f"{len(predictions)} predicted captions for {len(references)} reference sets"
        )
    if not predictions:
        raise DataError("no captions to score")
    gts, res = {}, {}
    for i, (p, refs) in enumerate(zip(predictions, references, strict=True)):
        refs = [tokenize_caption(r) for r in refs if r and r.strip()]
        if not refs:
            raise DataError(f"image {i} has no reference caption")
        gts[i] = refs
        # An empty prediction would make BLEU's length ratio divide by 0: score it as one
        # unknown word (it matches nothing).
        res[i] = [tokenize_caption(p) or "<empty>"]
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    out = {f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)}
    out["CIDEr"] = float(cider)
    return out
