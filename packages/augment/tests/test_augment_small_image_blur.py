"""Blur on small images: `blur_min_size` keeps a recipe's blur probabilities below 64 px (as
solo-learn's CIFAR recipes blur 32 px crops), and a 13-tap kernel gives PIL's GaussianBlur."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contrastkit.augment import (
    byol_views,
    isd_views,
    make_views,
    mocov2_views,
    simclr_views,
)
from contrastkit.augment import functional as AF
from contrastkit.augment.recipes import BLUR_MIN_SIZE


def test_blur_is_off_below_64px_unless_blur_min_size_allows_it() -> None:
    assert BLUR_MIN_SIZE == 64
    assert simclr_views(32)[0].blur_p == 0.0 and simclr_views(64)[0].blur_p == 0.5
    assert simclr_views(32, blur_min_size=0)[0].blur_p == 0.5
    assert mocov2_views(32, blur_min_size=32)[0].blur_p == 0.5
    assert mocov2_views(32, blur_min_size=33)[0].blur_p == 0.0
    first, second = byol_views(32, blur_min_size=0)
    assert (first.blur_p, second.blur_p) == (1.0, 0.1)
    # ISD: only the strong (student) view blurs; the weak teacher view never does.
    weak, strong = isd_views(32, blur_min_size=0)
    assert (weak.blur_p, strong.blur_p) == (0.0, 0.5)
    weak, strong = isd_views(32, blur_min_size=0, blur_kernel_size=13)
    assert weak.kernel_size == strong.kernel_size == 13
    # An explicit blur_p override wins over the size rule (both views of a symmetric recipe).
    assert simclr_views(32, blur_p=0.3)[1].blur_p == 0.3


@pytest.mark.parametrize("bad", [-1, 1.5, True, "64"])
def test_blur_min_size_must_be_an_int_at_least_zero(bad: object) -> None:
    with pytest.raises(ValueError, match="blur_min_size must be an int >= 0"):
        simclr_views(32, blur_min_size=bad)


def test_make_views_passes_blur_min_size_to_the_recipe() -> None:
    augment = make_views("isd_views", 32, "cifar10", seed=0, blur_min_size=0, blur_kernel_size=13)
    views = augment(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8))
    assert len(views) == 2 and all(v.shape == (8, 3, 32, 32) for v in views)


def _pil_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    from PIL import Image, ImageFilter

    blurred = Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=sigma))
    return np.asarray(blurred).astype(np.float64)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_a_13_tap_kernel_matches_pils_gaussian_blur_at_32px(sigma: float) -> None:
    # solo-learn blurs with PIL's ImageFilter.GaussianBlur(radius=sigma). Compare away from the
    # border (PIL extends edge pixels, we reflect): 13 taps agree within rounding, 3 taps do not.
    pytest.importorskip("PIL")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    reference = _pil_blur(image, sigma)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].double()
    inner = (slice(8, 24), slice(8, 24))

    def error(kernel_size: int) -> float:
        ours = AF.gaussian_blur(x, torch.tensor([sigma], dtype=torch.float64), kernel_size)
        ours = ours[0].permute(1, 2, 0).numpy()
        return float(np.abs(ours[inner] - reference[inner]).mean())

    assert error(13) < 1.5  # gray levels of 255; PIL rounds to uint8 and approximates with boxes
    if sigma >= 1.0:
        assert error(3) > 2 * error(13)
