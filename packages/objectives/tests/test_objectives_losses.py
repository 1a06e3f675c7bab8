"""Every loss against its loop-by-hand reference (value and gradient), gradcheck, and the i-Mix identity."""

from __future__ import annotations

import objectives_reference as ref
import pytest
import torch
import torch.nn.functional as F
from objectives_testing import (
    TARGET_KINDS,
    assert_same_value_and_grad,
    float64_inputs,
    make_targets,
    soft_targets,
)

from contrastkit.objectives import (
    BYOLLoss,
    ISDLoss,
    MemoryQueue,
    MoCoLoss,
    NPairLoss,
    NTXentLoss,
    byol_loss,
    imix_cutmix,
    imix_mixup,
    isd_loss,
    moco_loss,
    npair_loss,
    nt_xent_loss,
)

N, D, K = 6, 5, 7


@pytest.mark.parametrize("temperature", [0.5, 0.07])
def test_nt_xent_matches_loop_reference(temperature):
    z1, z2 = float64_inputs(0, (N, D), (N, D))
    ours = nt_xent_loss(z1, z2, temperature)
    assert_same_value_and_grad(ours, ref.nt_xent(z1, z2, temperature), [z1, z2])
    assert ours.dtype == torch.float64 and ours.ndim == 0


@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_npair_matches_loop_reference(kind):
    query, key = float64_inputs(1, (N, D), (N, D))
    targets = make_targets(kind, 11, N)
    ours = npair_loss(query, key, 0.2, targets)
    assert_same_value_and_grad(ours, ref.npair(query, key, 0.2, targets), [query, key])


@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_moco_matches_loop_reference(kind):
    query, key, queue = float64_inputs(2, (N, D), (N, D), (K, D))
    targets = make_targets(kind, 12, N)
    ours = moco_loss(query, key, queue, 0.2, targets)
    assert_same_value_and_grad(ours, ref.moco(query, key, queue, 0.2, targets), [query, key, queue])


def test_moco_with_identity_targets_differs_from_plain_moco():
    # With targets the other keys of the batch are negatives too; without, only the queue is.
    query, key, queue = float64_inputs(3, (N, D), (N, D), (K, D))
    plain = moco_loss(query, key, queue)
    with_targets = moco_loss(query, key, queue, targets=torch.arange(N))
    assert with_targets > plain


@pytest.mark.parametrize(("t_student", "t_teacher"), [(0.02, 0.02), (0.1, 0.01), (0.5, 0.3)])
def test_isd_matches_loop_reference(t_student, t_teacher):
    student, teacher, queue = float64_inputs(4, (N, D), (N, D), (K, D))
    ours = isd_loss(student, teacher, queue, t_student, t_teacher)
    theirs = ref.isd(student, teacher, queue, t_student, t_teacher)
    # The reference sums K terms of p (log p - log q); float64 rounding grows with 1/T.
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
    ours_grad = torch.autograd.grad(ours, [student, teacher, queue], allow_unused=True)
    theirs_grad = torch.autograd.grad(theirs, [student, teacher, queue], allow_unused=True)
    torch.testing.assert_close(ours_grad[0], theirs_grad[0], rtol=1e-8, atol=1e-9)
    # teacher is detached in both; the queue is treated as constant by isd_loss.
    assert ours_grad[1] is None
    assert ours_grad[2] is None


def test_isd_is_kl_divergence_zero_iff_distributions_match():
    student, _, queue = float64_inputs(5, (N, D), (N, D), (K, D))
    assert isd_loss(student, student, queue, 0.1, 0.1).abs() < 1e-12
    assert isd_loss(student, -student, queue, 0.1, 0.1) > 0.1


@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_byol_matches_loop_reference(kind):
    prediction, target = float64_inputs(6, (N, D), (N, D))
    targets = make_targets(kind, 16, N)
    ours = byol_loss(prediction, target, targets)
    assert_same_value_and_grad(ours, ref.byol(prediction, target, targets), [prediction, target])


def test_byol_does_not_backpropagate_into_target():
    prediction, target = float64_inputs(7, (N, D), (N, D))
    byol_loss(prediction, target).backward()
    assert prediction.grad is not None and target.grad is None


def _mixing_parts(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Recover (lam, permutation) from i-Mix targets: lam on the diagonal, 1 - lam at j(i)."""
    n = targets.shape[0]
    off_diagonal = targets.clone()
    off_diagonal[torch.arange(n), torch.arange(n)] = 0
    has_partner = off_diagonal.sum(dim=1) > 0
    permutation = torch.where(has_partner, off_diagonal.argmax(dim=1), torch.arange(n))
    lam = torch.where(has_partner, targets.diagonal(), torch.ones(n, dtype=targets.dtype))
    return lam, permutation


@pytest.mark.parametrize("mix", [imix_mixup, imix_cutmix])
def test_imix_identity_soft_ce_is_lam_weighted_hard_ce(mix):
    generator = torch.Generator().manual_seed(8)
    images = torch.randn(N, 3, 8, 8, generator=generator)
    _, targets = mix(images, alpha=1.0, generator=generator)
    lam, permutation = _mixing_parts(targets)
    query, key = float64_inputs(9, (N, D), (N, D))
    soft = npair_loss(query, key, 0.2, targets.double())
    logits = F.normalize(query, dim=1) @ F.normalize(key, dim=1).T / 0.2
    labels = torch.arange(N)
    per_sample = lam.double() * F.cross_entropy(logits, labels, reduction="none") + (
        1 - lam.double()
    ) * F.cross_entropy(logits, permutation, reduction="none")
    torch.testing.assert_close(soft, per_sample.mean(), rtol=1e-6, atol=1e-6)
    # Same identity through MoCo with a queue: the queue columns carry no target mass.
    queue = float64_inputs(10, (K, D))[0]
    moco_logits = (
        F.normalize(query, dim=1)
        @ torch.cat([F.normalize(key, dim=1), F.normalize(queue, dim=1)]).T
        / 0.2
    )
    moco_reference = lam.double() * F.cross_entropy(moco_logits, labels, reduction="none") + (
        1 - lam.double()
    ) * F.cross_entropy(moco_logits, permutation, reduction="none")
    torch.testing.assert_close(
        moco_loss(query, key, queue, 0.2, targets.double()),
        moco_reference.mean(),
        rtol=1e-6,
        atol=1e-6,
    )


def test_gradcheck_all_losses_float64():
    query, key, queue = float64_inputs(11, (3, 4), (3, 4), (5, 4))
    soft = soft_targets(21, 3)
    teacher = torch.randn(3, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent_loss(a, b, 0.3), (query, key))
    assert torch.autograd.gradcheck(lambda a, b: npair_loss(a, b, 0.3, soft), (query, key))
    assert torch.autograd.gradcheck(lambda a, b, c: moco_loss(a, b, c, 0.3), (query, key, queue))
    assert torch.autograd.gradcheck(
        lambda a, b, c: moco_loss(a, b, c, 0.3, soft), (query, key, queue)
    )
    assert torch.autograd.gradcheck(lambda a: isd_loss(a, teacher, queue, 0.2, 0.1), (query,))
    assert torch.autograd.gradcheck(lambda a: byol_loss(a, teacher, soft), (query,))


def test_module_wrappers_call_the_functions():
    query, key, queue = float64_inputs(12, (N, D), (N, D), (K, D))
    memory = MemoryQueue(K, D).double()
    memory.keys.copy_(queue.detach())
    soft = soft_targets(22, N)
    assert NTXentLoss(0.3)(query, key) == nt_xent_loss(query, key, 0.3)
    assert NPairLoss(0.3)(query, key, soft) == npair_loss(query, key, 0.3, soft)
    assert MoCoLoss(0.3)(query, key, memory) == moco_loss(query, key, queue, 0.3)
    assert MoCoLoss(0.3)(query, key, queue, soft) == moco_loss(query, key, queue, 0.3, soft)
    assert ISDLoss(0.1, 0.01)(query, key, memory) == isd_loss(query, key, queue, 0.1, 0.01)
    assert BYOLLoss()(query, key, soft) == byol_loss(query, key, soft)
    assert "temperature=0.3" in repr(NTXentLoss(0.3))
    assert "teacher_temperature=0.01" in repr(ISDLoss(0.1, 0.01))
