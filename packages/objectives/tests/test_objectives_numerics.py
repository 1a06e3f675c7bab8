"""Half precision, autocast, saturated similarities and zero vectors: losses stay finite and float32-exact."""

from __future__ import annotations

import math

import pytest
import torch
from objectives_testing import assert_autocast_keeps_float32, saturated_pairs

from contrastkit.objectives import byol_loss, isd_loss, moco_loss, npair_loss, nt_xent_loss

N, D, K = 8, 16, 32
COLD = 0.01  # temperature: similarities of +-1 become logits of +-100


def _all_losses(a: torch.Tensor, b: torch.Tensor, queue: torch.Tensor) -> dict[str, torch.Tensor]:
    soft = torch.full((a.shape[0], a.shape[0]), 1.0 / a.shape[0])
    return {
        "nt_xent": nt_xent_loss(a, b, COLD),
        "npair": npair_loss(a, b, COLD),
        "npair_soft": npair_loss(a, b, COLD, soft),
        "moco": moco_loss(a, b, queue, COLD),
        "moco_soft": moco_loss(a, b, queue, COLD, soft),
        "isd": isd_loss(a, b, queue, COLD, COLD),
        "byol": byol_loss(a, b),
    }


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", list(saturated_pairs(0, N, D)))
def test_half_inputs_at_cold_temperature_match_float32(half, case):
    a, b = saturated_pairs(0, N, D)[case]
    queue = torch.cat(
        [a[:4], -a[:4], torch.randn(K - 8, D, generator=torch.Generator().manual_seed(1))]
    )
    a_half, b_half, queue_half = a.to(half), b.to(half), queue.to(half)
    low = _all_losses(a_half, b_half, queue_half)
    # The float32 reference sees exactly the values the half tensors hold.
    full = _all_losses(a_half.float(), b_half.float(), queue_half.float())
    for name, value in low.items():
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value), (name, value)
        torch.testing.assert_close(value, full[name], rtol=0, atol=1e-3, msg=name)
    if case in ("identical", "opposite"):
        # Saturated: every cosine is exactly +-1 whatever the rounding, so the half result must
        # also equal float32 on the original (unrounded) embeddings for the in-batch losses.
        original = _all_losses(a, b, queue)
        for name in ("nt_xent", "npair", "npair_soft", "byol"):
            torch.testing.assert_close(low[name], original[name], rtol=0, atol=1e-3, msg=name)


def test_saturated_losses_have_closed_form_values():
    a, _ = saturated_pairs(0, N, D)["identical"]
    a = a.to(torch.bfloat16)
    # All 2N - 1 logits of an anchor equal 1/T, so each anchor's loss is log(2N - 1).
    assert math.isclose(nt_xent_loss(a, a, COLD).item(), math.log(2 * N - 1), abs_tol=1e-4)
    # Opposite views: positive logit -1/T, the N - 1 same-view logits +1/T, the N - 1 others -1/T.
    # loss = log((N - 1) e^{1/T} + N e^{-1/T}) + 1/T = log((N - 1) e^{2/T} + N).
    expected = math.log((N - 1) * math.exp(2 / COLD) + N)
    assert math.isclose(nt_xent_loss(a, -a, COLD).item(), expected, rel_tol=1e-5)
    assert math.isclose(byol_loss(a, -a).item(), 4.0, abs_tol=1e-6)


def test_half_gradients_are_finite_at_cold_temperature():
    for half in (torch.float16, torch.bfloat16):
        for a, b in saturated_pairs(0, N, D).values():
            a = a.to(half).requires_grad_()
            b = b.to(half).requires_grad_()
            nt_xent_loss(a, b, COLD).backward()
            assert a.grad.dtype == half
            assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_autocast_does_not_lower_the_loss_precision():
    assert_autocast_keeps_float32(_all_losses, seed=2, n=N, d=D, bank_rows=K)


def test_autocast_backward_inside_the_region_is_float32():
    generator = torch.Generator().manual_seed(3)
    a = torch.randn(N, D, generator=generator, requires_grad=True)
    b = torch.randn(N, D, generator=generator, requires_grad=True)
    queue = torch.randn(K, D, generator=generator)
    expected = torch.autograd.grad(moco_loss(a, b, queue, COLD), a)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = torch.autograd.grad(moco_loss(a, b, queue, COLD), a)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_zero_embedding_gives_finite_loss_and_gradient():
    generator = torch.Generator().manual_seed(4)
    a = torch.randn(N, D, generator=generator)
    a[0] = 0
    a.requires_grad_()
    b = torch.randn(N, D, generator=generator)
    queue = torch.randn(K, D, generator=generator)
    for loss in _all_losses(a, b, queue).values():
        assert torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, a)
        assert torch.isfinite(grad).all()
