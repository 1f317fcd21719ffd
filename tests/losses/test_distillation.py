"""Distillation losses (Hinton arXiv:1503.02531, DeiT arXiv:2012.12877 §5) against independent
computations: softmax / log-softmax written out by hand in float64, summed over classes,
averaged over the batch, times tau^2; a closed-form two-class value; the analytic gradient."""

from __future__ import annotations

import math

import pytest
import torch

from visionzoo.errors import ConfigError
from visionzoo.losses.distillation import (
    DISTILL_TYPES,
    distillation_loss,
    hard_distillation_loss,
    soft_distillation_loss,
)

N, K = 6, 5


def _log_softmax_by_hand(z: torch.Tensor) -> torch.Tensor:
    """log(exp(z_k) / sum_j exp(z_j)), shifted by the row max for stability (float64)."""
    z = z.double()
    z = z - z.max(dim=1, keepdim=True).values
    return z - torch.log(torch.exp(z).sum(dim=1, keepdim=True))


def _soft_reference(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    log_ps = _log_softmax_by_hand(student / tau)
    log_pt = _log_softmax_by_hand(teacher / tau)
    pt = torch.exp(log_pt)
    per_image = (pt * (log_pt - log_ps)).sum(dim=1)  # KL(p_t || p_s), one per image
    return per_image.mean() * tau**2


def _hard_reference(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    log_ps = _log_softmax_by_hand(student)
    total = 0.0
    for n in range(student.shape[0]):  # plain loop: the reference, not the fast path
        row = teacher[n].tolist()
        y_t = row.index(max(row))  # the first maximal class
        total += -float(log_ps[n, y_t])
    return torch.tensor(total / student.shape[0], dtype=torch.float64)


@pytest.mark.parametrize("tau", [1.0, 3.0, 0.5])
def test_soft_matches_hand_computation(tau):
    student = torch.randn(N, K) * 3
    teacher = torch.randn(N, K) * 3
    got = soft_distillation_loss(student, teacher, tau)
    expected = _soft_reference(student, teacher, tau)
    assert got.dtype == torch.float32 and got.dim() == 0
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(distillation_loss(student, teacher, "soft", tau), got)


def test_soft_closed_form_two_classes():
    # p_t = (3/4, 1/4), p_s = (1/2, 1/2): KL = 3/4 ln(3/2) + 1/4 ln(1/2).
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert soft_distillation_loss(student, teacher, 1.0).item() == pytest.approx(expected, abs=1e-6)
    # tau = 2: p_t = softmax(ln3/2, 0) = (sqrt3, 1)/(sqrt3+1); times tau^2 = 4.
    a = math.sqrt(3.0) / (math.sqrt(3.0) + 1)
    kl2 = a * math.log(2 * a) + (1 - a) * math.log(2 * (1 - a))
    assert soft_distillation_loss(student, teacher, 2.0).item() == pytest.approx(4 * kl2, abs=1e-6)


def test_soft_is_zero_for_identical_logits_and_positive_otherwise():
    z = torch.randn(N, K)
    assert soft_distillation_loss(z, z.clone(), 2.0).abs().item() < 1e-6
    # Adding a constant per row does not change a softmax.
    assert soft_distillation_loss(z, z + 4.0, 1.0).abs().item() < 1e-5
    assert soft_distillation_loss(z, torch.randn(N, K), 1.0).item() > 0


def test_soft_gradient_is_tau_times_prob_difference():
    # d/dz_s [tau^2 * mean_n KL] = tau * (softmax(z_s/tau) - softmax(z_t/tau)) / N.
    tau = 2.5
    student = torch.randn(N, K, requires_grad=True)
    teacher = torch.randn(N, K)
    soft_distillation_loss(student, teacher, tau).backward()
    p_s = torch.exp(_log_softmax_by_hand(student.detach() / tau))
    p_t = torch.exp(_log_softmax_by_hand(teacher / tau))
    expected = tau * (p_s - p_t) / N
    torch.testing.assert_close(student.grad.double(), expected, rtol=1e-5, atol=1e-7)


def test_soft_in_float32_for_bf16_inputs():
    student, teacher = torch.randn(N, K), torch.randn(N, K)
    got = soft_distillation_loss(student.bfloat16(), teacher.bfloat16(), 2.0)
    assert got.dtype == torch.float32
    expected = _soft_reference(student.bfloat16().float(), teacher.bfloat16().float(), 2.0)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


def test_hard_matches_hand_computation():
    student = torch.randn(N, K) * 2
    teacher = torch.randn(N, K) * 2
    got = hard_distillation_loss(student, teacher)
    torch.testing.assert_close(
        got.double(), _hard_reference(student, teacher), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(distillation_loss(student, teacher, "hard", tau=7.0), got)


def test_hard_uses_only_the_teachers_argmax():
    student = torch.randn(N, K)
    teacher = torch.randn(N, K)
    sharper = teacher * 10 + 3  # same argmax per row, different distribution
    torch.testing.assert_close(
        hard_distillation_loss(student, teacher), hard_distillation_loss(student, sharper)
    )
    # Ties go to the first maximal class, like the reference.
    tied = torch.tensor([[1.0, 2.0, 2.0, 0.0, 0.0]])
    s = torch.randn(1, K)
    torch.testing.assert_close(hard_distillation_loss(s, tied).double(), _hard_reference(s, tied))
    # A teacher agreeing with a confident student gives a small loss; disagreeing, a large one.
    confident = torch.tensor([[8.0, 0.0, 0.0, 0.0, 0.0]])
    assert hard_distillation_loss(confident, confident).item() < 0.01
    assert hard_distillation_loss(confident, confident.roll(1, dims=1)).item() > 7


def test_errors():
    s, t = torch.randn(N, K), torch.randn(N, K)
    with pytest.raises(ConfigError, match="distill.tau must be > 0"):
        soft_distillation_loss(s, t, 0.0)
    with pytest.raises(ConfigError, match="distill.type: unknown value 'medium'"):
        distillation_loss(s, t, "medium")
    with pytest.raises(ValueError, match=r"same shape, got \(6, 5\) and \(6, 4\)"):
        soft_distillation_loss(s, t[:, :4])
    with pytest.raises(ValueError, match="Tensor\\[N, K\\]"):
        hard_distillation_loss(s.flatten(), t.flatten())
    assert DISTILL_TYPES == ("none", "soft", "hard")
