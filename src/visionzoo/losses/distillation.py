"""Knowledge-distillation losses — Hinton et al., "Distilling the Knowledge in a Neural Network",
arXiv:1503.02531, as used by DeiT — Touvron et al., "Training data-efficient image transformers &
distillation through attention", arXiv:2012.12877 §5.

Shapes: N images, K classes; logits are Tensor[N, K].

* **Soft** distillation (DeiT eq. 1's second term, Hinton §2): the Kullback-Leibler divergence
  from the teacher's to the student's class distribution, both softened by a temperature tau,
  times tau^2 so that the gradient's size does not shrink as tau grows (Hinton §2.1)::

      soft = tau^2 * mean_n sum_k p_t[n, k] * (log p_t[n, k] - log p_s[n, k])
      p_t = softmax(z_t / tau),  p_s = softmax(z_s / tau)

  i.e. ``KL(p_t || p_s)`` per image, averaged over the batch.
* **Hard** distillation (DeiT eq. 2's second term): cross-entropy against the teacher's top
  class, ``y_t = argmax_k z_t[n, k]``, as if it were the label.

The composition with the label loss (``(1 - alpha) * CE(labels) + alpha * distill``, with a
[distill] head taking the second term) is the classification task's business
(``visionzoo.tasks.classification``).

Departure from DeiT's official code: it divides the summed KL by ``N * K`` (``outputs.numel()``),
which makes the soft term K times smaller than the per-image KL of its paper and of Hinton; we
average over the batch only (``reduction="batchmean"``), the KL the equations define.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

__all__ = [
    "DISTILL_TYPES",
    "soft_distillation_loss",
    "hard_distillation_loss",
    "distillation_loss",
]

DISTILL_TYPES = ("none", "soft", "hard")


def _check_pair(student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "distillation: student and teacher logits must both be Tensor[N, K] of the same "
            f"shape, got {tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )


def soft_distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, tau: float = 1.0
) -> Tensor:
    """``tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau))``, averaged over the batch.

    Args:
        student_logits: Tensor[N, K] (carries the gradient).
        teacher_logits: Tensor[N, K] (treated as a constant: pass it detached / under no_grad).
        tau: the temperature, > 0.

    Computed in float32 whatever the inputs' dtype (bf16 log-softmax loses the small
    probabilities that the soft targets are about).
    """
    _check_pair(student_logits, teacher_logits)
    if not tau > 0:
        raise ConfigError(f"distill.tau must be > 0, got {tau!r}")
    log_p_s = F.log_softmax(student_logits.float() / tau, dim=1)  # (N, K)
    log_p_t = F.log_softmax(teacher_logits.float() / tau, dim=1)  # (N, K)
    # kl_div(input, target) = sum target * (log target - input): KL(teacher || student).
    # log_target=True keeps the teacher in log space (no log(0) for vanishing probabilities).
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * (tau * tau)


def hard_distillation_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Cross-entropy of the student against the teacher's argmax class, averaged over the batch.

    Args:
        student_logits: Tensor[N, K].
        teacher_logits: Tensor[N, K]; only its argmax is used (ties: the first maximal class).
    """
    _check_pair(student_logits, teacher_logits)
    teacher_labels = teacher_logits.argmax(dim=1)  # (N,) int64
    return F.cross_entropy(student_logits.float(), teacher_labels)


def distillation_loss(
    student_logits: Tensor, teacher_logits: Tensor, kind: str, tau: float = 1.0
) -> Tensor:
    """The ``kind`` ("soft" or "hard") distillation term; ``tau`` is used by "soft" only."""
    if kind == "soft":
        return soft_distillation_loss(student_logits, teacher_logits, tau)
    if kind == "hard":
        return hard_distillation_loss(student_logits, teacher_logits)
    raise ConfigError(f"distill.type: unknown value {kind!r}; distillation losses: soft, hard")
