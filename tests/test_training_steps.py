"""Cross-package training steps: augment -> backbones -> objectives on real CIFAR-10 / Covertype rows.

Each test wires the public APIs of the three leaf packages together the way a user would,
and checks the result against an independent computation.
"""

from __future__ import annotations

import copy
import gzip
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastkit.augment import make_views
from contrastkit.backbones import PredictionHead, ProjectionHead, create_backbone
from contrastkit.objectives import (
    MemoryQueue,
    MomentumTeacher,
    byol_loss,
    imix_mixup,
    isd_loss,
    moco_loss,
    npair_loss,
    nt_xent_loss,
)

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _require(path: Path) -> None:
    """Skip without the real data file, except on CI (`CI` set), where that is a failure."""
    if path.is_file():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{path} not found (CI is set, so tests that need real data must not skip)")
    pytest.skip(f"{path} not found")


@pytest.fixture(scope="module")
def cifar_batch() -> torch.Tensor:
    """32 real CIFAR-10 test images, uint8 (32, 3, 32, 32)."""
    path = SHARED / "cifar10" / "cifar10_test.npz"
    _require(path)
    x = np.load(path)["x"][:32]
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def _tiny_encoder(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    backbone = create_backbone("myresnet")
    head = ProjectionHead(backbone.num_features, 64, 32)
    return backbone, head


def _nt_xent_by_hand(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    z = F.normalize(torch.cat([z1, z2]).double(), dim=1)
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        denom = sum(math.exp(float(z[i] @ z[j]) / t) for j in range(2 * n) if j != i)
        total += -(float(z[i] @ z[pos]) / t - math.log(denom))
    return total / (2 * n)


def test_simclr_step_on_real_images_matches_hand_loss_and_learns(cifar_batch: torch.Tensor) -> None:
    views = make_views("simclr_views", 32, dataset="cifar10", seed=0)(cifar_batch[:16])
    assert len(views) == 2
    for v in views:
        assert v.shape == (16, 3, 32, 32) and v.dtype == torch.float32
    backbone, head = _tiny_encoder()
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    losses = []
    for _ in range(4):
        z = head(backbone(torch.cat(views)))
        z1, z2 = z.chunk(2)
        loss = nt_xent_loss(z1, z2, temperature=0.5)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        backbone.eval(), head.eval()
        z = head(backbone(torch.cat(views)))
        z1, z2 = z.chunk(2)
        assert nt_xent_loss(z1, z2, 0.5).item() == pytest.approx(
            _nt_xent_by_hand(z1, z2, 0.5), rel=1e-5
        )
    # the same two views, optimised for four steps: the loss must go down.
    assert losses[-1] < losses[0]


def test_moco_step_updates_teacher_and_queue_as_specified(cifar_batch: torch.Tensor) -> None:
    views = make_views("mocov2_views", 32, dataset="cifar10", seed=1)(cifar_batch)
    backbone, head = _tiny_encoder(1)
    student = torch.nn.Sequential(backbone, head)
    teacher = MomentumTeacher(student)
    queue = MemoryQueue(64, 32)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)

    q = student(views[0])
    with torch.no_grad():
        k = teacher(views[1])
    before_keys = queue.keys.clone()
    loss = moco_loss(q, k, queue.keys, temperature=0.2)
    # independent: cross-entropy with the positive in column 0
    qn, kn, qu = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(before_keys, dim=1)
    logits = torch.cat([(qn * kn).sum(1, keepdim=True), qn @ qu.T], dim=1) / 0.2
    expected = F.cross_entropy(logits, torch.zeros(32, dtype=torch.long))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)

    opt.zero_grad()
    loss.backward()
    opt.step()
    old_teacher = copy.deepcopy(teacher)
    teacher.update(student, 0.99)
    for (name, t_new), (_, t_old), (_, s) in zip(
        teacher.named_parameters(), old_teacher.named_parameters(), student.named_parameters()
    ):
        torch.testing.assert_close(t_new, 0.99 * t_old + 0.01 * s.detach(), msg=name)

    queue.enqueue(k)
    assert int(queue.ptr) == 32
    torch.testing.assert_close(queue.keys[:32], F.normalize(k, dim=1))
    torch.testing.assert_close(queue.keys[32:], before_keys[32:])


def test_isd_and_byol_losses_on_backbone_features(cifar_batch: torch.Tensor) -> None:
    weak, strong = make_views("isd_views", 32, dataset="cifar10", seed=2)(cifar_batch)
    backbone, head = _tiny_encoder(2)
    student = torch.nn.Sequential(backbone, head)
    predictor = PredictionHead(32, 64, 32)
    teacher = MomentumTeacher(student)
    queue = MemoryQueue(128, 32)
    s = predictor(student(strong))
    with torch.no_grad():
        t = teacher(weak)
    loss = isd_loss(s, t, queue.keys, student_temperature=0.1, teacher_temperature=0.01)
    # independent: KL(p_t || p_s) summed over the queue, averaged over the batch
    qk = F.normalize(queue.keys, dim=1)
    log_ps = F.log_softmax(F.normalize(s, dim=1) @ qk.T / 0.1, dim=1)
    pt = F.softmax(F.normalize(t, dim=1) @ qk.T / 0.01, dim=1)
    expected = (pt * (pt.clamp_min(1e-30).log() - log_ps)).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in predictor.parameters())
    assert all(p.grad is not None for p in student.parameters())

    b = byol_loss(predictor(student(weak)), t)
    cos = F.cosine_similarity(predictor(student(weak)), t, dim=1)
    assert b.item() == pytest.approx((2 - 2 * cos).mean().item(), rel=1e-5)


@pytest.fixture(scope="module")
def covtype_rows() -> tuple[torch.Tensor, torch.Tensor]:
    path = SHARED / "covtype" / "covtype_train15k.csv.gz"
    _require(path)
    with gzip.open(path, "rt") as fh:
        a = np.loadtxt(fh, delimiter=",", skiprows=1, dtype=np.int64, max_rows=256)
    x = torch.from_numpy(a[:, 1:55].astype(np.float32))
    x[:, :10] = (x[:, :10] - x[:, :10].mean(0)) / x[:, :10].std(0)
    return x, torch.from_numpy(a[:, 55] - 1)


def test_imix_npair_on_tabular_mlp_obeys_the_mixing_identity(covtype_rows) -> None:
    x, _ = covtype_rows
    x = x[:64]
    torch.manual_seed(0)
    mlp = create_backbone("mlp", in_features=54, width=64, num_layers=3)
    g = torch.Generator().manual_seed(3)
    mixed, targets = imix_mixup(x, alpha=1.0, generator=g)
    torch.testing.assert_close(targets.sum(1), torch.ones(64))
    q, k = mlp(mixed), mlp(x)
    loss = npair_loss(q, k, temperature=0.2, targets=targets)
    # i-Mix identity: soft CE == lam * CE(i) + (1 - lam) * CE(perm(i)), per sample
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / 0.2
    lam = targets.diagonal()
    off = targets - torch.diag(lam)
    perm = off.argmax(1)
    ident = torch.arange(64)
    ce_self = F.cross_entropy(logits, ident, reduction="none")
    ce_perm = F.cross_entropy(logits, perm, reduction="none")
    # where the permutation maps i to itself the two terms coincide
    expected = (lam * ce_self + (1 - lam) * torch.where(perm == ident, ce_self, ce_perm)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_bf16_autocast_through_backbone_and_loss_stays_close_to_fp32(
    cifar_batch: torch.Tensor,
) -> None:
    views = make_views("simclr_views", 32, dataset="cifar10", seed=4)(cifar_batch[:16])
    backbone, head = _tiny_encoder(4)
    backbone.eval(), head.eval()
    with torch.no_grad():
        z1, z2 = head(backbone(views[0])), head(backbone(views[1]))
        ref = nt_xent_loss(z1, z2, 0.1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h1, h2 = head(backbone(views[0])), head(backbone(views[1]))
            low = nt_xent_loss(h1, h2, 0.1)
    assert h1.dtype == torch.bfloat16
    assert low.dtype == torch.float32 and torch.isfinite(low)
    assert low.item() == pytest.approx(ref.item(), rel=5e-2)
