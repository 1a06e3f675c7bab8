"""i-Mix mixup and cutmix: mixed inputs agree with the returned virtual labels, lam has the right law."""

from __future__ import annotations

import math
import random

import pytest
import torch

from contrastkit.objectives import imix_cutmix, imix_mixup


def _lam_and_partner(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Read (lam, j) back from targets, checking each row is lam e_i + (1 - lam) e_j."""
    n = targets.shape[0]
    lam = torch.empty(n, dtype=targets.dtype)
    partner = torch.empty(n, dtype=torch.long)
    for i in range(n):
        nonzero = torch.nonzero(targets[i]).flatten().tolist()
        assert i in nonzero and len(nonzero) <= 2, targets[i]
        partner[i] = next((j for j in nonzero if j != i), i)
        lam[i] = targets[i, i] if partner[i] != i else 1.0
        torch.testing.assert_close(targets[i].sum(), torch.tensor(1.0, dtype=targets.dtype))
    return lam, partner


@pytest.mark.parametrize("shape", [(16, 3, 8, 8), (16, 54), (16, 1, 20, 7)])
def test_mixup_mixed_inputs_match_targets(shape):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=generator)
    mixed, targets = imix_mixup(x, alpha=1.0, generator=generator)
    assert mixed.shape == x.shape and targets.shape == (16, 16) and targets.dtype == torch.float32
    lam, partner = _lam_and_partner(targets)
    assert sorted(partner.tolist()) == list(range(16))  # a permutation
    assert (lam >= 0.5).all() and (lam <= 1).all()
    assert len(set(lam.tolist())) > 1  # one lam per sample
    for i in range(16):
        expected = lam[i] * x[i] + (1 - lam[i]) * x[partner[i]]
        torch.testing.assert_close(mixed[i], expected, rtol=1e-5, atol=1e-6)


def test_mixup_lam_follows_folded_beta():
    # E[max(B, 1 - B)] is 3/4 for Beta(1, 1) and 11/16 for Beta(2, 2).
    x = torch.zeros(4000, 1)  # standard error of the mean about 0.0023
    for alpha, mean in ((1.0, 0.75), (2.0, 0.6875)):
        _, targets = imix_mixup(x, alpha, torch.Generator().manual_seed(1))
        lam = targets.diagonal()
        assert abs(lam.mean().item() - mean) < 0.01, (alpha, lam.mean())


def test_mixup_is_reproducible_and_float64_stays_float64():
    x = torch.randn(8, 5, dtype=torch.float64)
    a = imix_mixup(x, 1.0, torch.Generator().manual_seed(3))
    b = imix_mixup(x, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].dtype == torch.float64 and a[1].dtype == torch.float64
    torch.manual_seed(4)
    c = imix_mixup(x)
    torch.manual_seed(4)
    d = imix_mixup(x)
    assert torch.equal(c[1], d[1])


def test_mixup_single_sample_is_identity():
    x = torch.randn(1, 3)
    mixed, targets = imix_mixup(x, 1.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(mixed, x)
    torch.testing.assert_close(targets, torch.ones(1, 1))


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_pastes_one_box_and_targets_use_its_area(seed):
    n, c, h, w = 10, 2, 12, 9
    # Sample i is the constant i (in every channel), so each mixed pixel tells its source.
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, c, h, w).clone()
    mixed, targets = imix_cutmix(x, alpha=1.0, generator=torch.Generator().manual_seed(seed))
    lam, partner = _lam_and_partner(targets)
    moved = [i for i in range(n) if partner[i] != i]
    if moved:  # one lam for the batch (fixed points of the permutation read back as lam = 1)
        assert torch.allclose(lam[moved], lam[moved[0]].expand(len(moved)))
    source = mixed[:, 0].long()  # (n, h, w)
    pasted = source != torch.arange(n).view(n, 1, 1)
    if moved:
        box = pasted[moved[0]]
        for i in moved:
            assert torch.equal(pasted[i], box), "one box for the whole batch"
            assert (source[i][box] == partner[i]).all()
        rows, cols = torch.nonzero(box, as_tuple=True)
        if rows.numel():  # a rectangle: its bounding box is full
            height = rows.max() - rows.min() + 1
            width = cols.max() - cols.min() + 1
            assert height * width == rows.numel()
        area_fraction = box.float().mean()
        torch.testing.assert_close(lam[moved[0]], 1 - area_fraction)
    assert torch.equal(mixed[:, 0], mixed[:, 1])  # same box in every channel


def _published_cutmix_lam(rng: random.Random, size: int, alpha: float) -> float:
    """CutMix's rand_bbox (Yun et al. 2019), folded as in i-Mix, written with the random module."""
    lam = rng.betavariate(alpha, alpha)
    lam = max(lam, 1 - lam)
    cut = int(size * math.sqrt(1 - lam))
    cy, cx = rng.randrange(size), rng.randrange(size)
    y1, y2 = min(max(cy - cut // 2, 0), size), min(max(cy + cut // 2, 0), size)
    x1, x2 = min(max(cx - cut // 2, 0), size), min(max(cx + cut // 2, 0), size)
    return 1 - (y2 - y1) * (x2 - x1) / size**2


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_cutmix_corrected_lam_has_the_published_distribution(alpha):
    size = 32
    x = torch.zeros(8, 1, size, size)
    generator = torch.Generator().manual_seed(7)
    # Rows of samples the permutation moves hold lam on the diagonal; fixed points hold 1.
    ours = [imix_cutmix(x, alpha, generator)[1].diagonal().min().item() for _ in range(400)]
    rng = random.Random(0)
    published = [_published_cutmix_lam(rng, size, alpha) for _ in range(40000)]
    assert min(ours) >= 0.5
    # 400 draws of a variable with std < 0.15: the means agree to well within 0.025.
    assert abs(sum(ours) / len(ours) - sum(published) / len(published)) < 0.025


def test_cutmix_keeps_integer_images():
    x = torch.randint(0, 255, (6, 3, 8, 8), dtype=torch.uint8)
    mixed, targets = imix_cutmix(x, 2.0, torch.Generator().manual_seed(0))
    assert mixed.dtype == torch.uint8 and targets.dtype == torch.float32
