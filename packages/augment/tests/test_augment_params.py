"""Parameter distributions over 10k samples against a by-hand port of torchvision's sampling loops."""

from __future__ import annotations

import bisect
import itertools
import math
import random

import pytest
import torch

from contrastkit.augment import ViewRecipe, linear_probe, sample_view_params, simclr

N = 10_000


def _draw(recipe: ViewRecipe, height: int, width: int, seed: int = 0):
    return sample_view_params(recipe, N, height, width, torch.Generator().manual_seed(seed))


def _torchvision_rrc_by_hand(
    rng: random.Random, height: int, width: int, scale, ratio
) -> tuple[int, int, bool]:
    """torchvision's RandomResizedCrop.make_params loop, in plain Python: (h, w, found)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return h, w, True
    in_ratio = width / height
    if in_ratio < min(ratio):
        return round(width / min(ratio)), width, False
    if in_ratio > max(ratio):
        return height, round(height * max(ratio)), False
    return height, width, False


def _ks_distance(a: list[float], b: list[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    a, b = sorted(a), sorted(b)
    return max(
        abs(bisect.bisect_right(a, v) / len(a) - bisect.bisect_right(b, v) / len(b))
        for v in set(a) | set(b)
    )


# With 10k samples per side, the KS statistic exceeds 0.03 with probability < 0.1% if the
# distributions are equal; the seeds are fixed, so the test is deterministic.
KS_LIMIT = 0.03


@pytest.mark.parametrize(
    ("height", "width", "scale"),
    [(32, 32, (0.08, 1.0)), (96, 96, (0.2, 1.0)), (16, 64, (0.5, 1.0))],
)
def test_resized_crop_area_and_ratio_follow_torchvision(height: int, width: int, scale) -> None:
    recipe = simclr(32, crop_scale=scale)
    boxes = _draw(recipe, height, width).boxes
    top, left, h, w = boxes.T.tolist()
    assert min(top) >= 0 and min(left) >= 0 and min(h) >= 1 and min(w) >= 1
    assert all(t + bh <= height for t, bh in zip(top, h)) and all(
        s + bw <= width for s, bw in zip(left, w)
    )

    rng = random.Random(0)
    reference = [
        _torchvision_rrc_by_hand(rng, height, width, scale, recipe.crop_ratio) for _ in range(N)
    ]
    ours_area = [bh * bw / (height * width) for bh, bw in zip(h, w)]
    ref_area = [rh * rw / (height * width) for rh, rw, _ in reference]
    assert _ks_distance(ours_area, ref_area) < KS_LIMIT
    assert (
        _ks_distance([bw / bh for bh, bw in zip(h, w)], [rw / rh for rh, rw, _ in reference])
        < KS_LIMIT
    )
    # Crops that were found (not the fallback) respect the recipe's area up to rounding of the sides.
    assert sum(ours_area) / N == pytest.approx(sum(ref_area) / N, abs=0.01)


def test_resized_crop_fallback_rate_and_box_follow_torchvision() -> None:
    # On a 32 x 64 image with crops of >= 50% of the area and ratio <= 4/3, about a third of the
    # images miss on all 10 tries and get torchvision's centred fallback box.
    recipe = simclr(32, crop_scale=(0.5, 1.0))
    boxes = _draw(recipe, 32, 64).boxes
    fallback_box = torch.tensor([0, (64 - 43) // 2, 32, 43])  # height 32, width round(32 * 4/3)
    fallback = (boxes == fallback_box).all(dim=1)
    rng = random.Random(1)
    reference = [
        _torchvision_rrc_by_hand(rng, 32, 64, (0.5, 1.0), recipe.crop_ratio) for _ in range(N)
    ]
    ref_rate = sum(not found for _, _, found in reference) / N
    assert 0.3 < ref_rate < 0.4
    # A found box equals the fallback box only by coincidence (it must also land at left 10): rare.
    assert fallback.float().mean().item() == pytest.approx(ref_rate, abs=4 * math.sqrt(0.25 / N))
    ours_width = boxes[:, 3].tolist()
    assert _ks_distance(ours_width, [w for _, w, _ in reference]) < KS_LIMIT


def test_crop_position_is_uniform_over_valid_offsets() -> None:
    recipe = simclr(32, crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0))  # always a 16 x 16 box
    boxes = _draw(recipe, 32, 32).boxes
    assert (boxes[:, 2:] == 16).all()
    counts = torch.bincount(boxes[:, 0], minlength=17)
    assert counts.numel() == 17  # offsets 0..16, all reachable
    expected = N / 17
    chi2 = ((counts.float() - expected) ** 2 / expected).sum().item()
    assert chi2 < 45.0  # chi-square, 16 degrees of freedom: P(chi2 > 45) < 1e-4


def test_padded_crop_offsets_cover_minus_padding_to_plus_padding() -> None:
    boxes = _draw(linear_probe(32), 32, 32).boxes
    assert set(boxes[:, 0].tolist()) == set(range(-4, 5))
    assert set(boxes[:, 1].tolist()) == set(range(-4, 5))
    assert (boxes[:, 2:] == 32).all()


def test_probabilities_match_the_recipe() -> None:
    recipe = simclr(96, flip_p=0.5, jitter_p=0.8, gray_p=0.2, blur_p=0.5, solarize_p=0.1)
    p = _draw(recipe, 96, 96)
    tolerance = 4 * math.sqrt(0.25 / N)  # 4 standard errors of a proportion
    assert p.flip.float().mean().item() == pytest.approx(0.5, abs=tolerance)
    assert p.jitter.float().mean().item() == pytest.approx(0.8, abs=tolerance)
    assert p.gray.float().mean().item() == pytest.approx(0.2, abs=tolerance)
    assert (p.sigma > 0).float().mean().item() == pytest.approx(0.5, abs=tolerance)
    assert p.solarize.float().mean().item() == pytest.approx(0.1, abs=tolerance)
    blurred = p.sigma[p.sigma > 0]
    assert blurred.min().item() >= 0.1 and blurred.max().item() <= 2.0
    assert blurred.mean().item() == pytest.approx(1.05, abs=0.02)


def test_jitter_factors_and_orders() -> None:
    p = _draw(simclr(32, saturation=0.2), 32, 32)
    low = torch.tensor([0.6, 0.6, 0.8, -0.1])
    high = torch.tensor([1.4, 1.4, 1.2, 0.1])
    assert (p.factors >= low).all() and (p.factors <= high).all()
    torch.testing.assert_close(p.factors.mean(0), (low + high) / 2, atol=0.01, rtol=0)
    # Every row is a permutation, and all 24 permutations are about equally frequent.
    assert (p.order.sort(dim=1).values == torch.arange(4)).all()
    index = {perm: i for i, perm in enumerate(itertools.permutations(range(4)))}
    counts = torch.bincount(
        torch.tensor([index[tuple(row)] for row in p.order.tolist()]), minlength=24
    )
    expected = N / 24
    assert ((counts.float() - expected) ** 2 / expected).sum().item() < 60.0  # chi2, 23 dof


def test_switching_an_op_off_keeps_the_other_draws() -> None:
    a = _draw(simclr(32), 32, 32, seed=7)
    b = _draw(simclr(32, gray_p=0.0, jitter_p=0.0), 32, 32, seed=7)
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.flip, b.flip)
    assert not b.gray.any() and not b.jitter.any()


def test_padded_crop_of_too_small_image_is_rejected() -> None:
    with pytest.raises(ValueError, match="padded crop of size 32"):
        sample_view_params(linear_probe(32), 4, 20, 32)


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        sample_view_params(simclr(32), 0, 32, 32)
