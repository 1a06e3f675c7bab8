"""contrastkit.augment against torchvision.transforms.v2 on the same parameters, op by op and whole views.

torchvision runs one image at a time with the crop box, flip, jitter factors and order, grayscale,
blur sigma and solarize decision that our batched ops drew per sample; the results must agree.
"""

from __future__ import annotations

import bisect
from pathlib import Path

import pytest
import torch

tv2 = pytest.importorskip("torchvision.transforms.v2")
TF = pytest.importorskip("torchvision.transforms.v2.functional")

from contrastkit.augment import (  # noqa: E402
    DATASET_NORMALIZATION,
    ViewParams,
    ViewRecipe,
    apply_view,
    byol,
    identity,
    linear_probe,
    mocov2,
    sample_view_params,
    simclr,
)
from contrastkit.augment import functional as AF  # noqa: E402

CIFAR = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10" / "cifar10_test.npz"
)


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) float in [0, 1]: real CIFAR-10 test images if present (resized to size)."""
    if CIFAR.exists():
        import numpy as np

        with np.load(CIFAR) as data:
            images = torch.from_numpy(data["x"][seed : seed + n]).permute(0, 3, 1, 2).float() / 255
        if size != 32:
            images = torch.nn.functional.interpolate(
                images, size=(size, size), mode="bilinear"
            ).clamp(0, 1)
        return images.contiguous()
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _per_sample(fn, images: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return torch.stack([fn(image, float(v)) for image, v in zip(images, values)])


def _random_boxes(n: int, height: int, width: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    boxes = []
    for _ in range(n):
        h = int(torch.randint(1, height + 1, (1,), generator=g))
        w = int(torch.randint(1, width + 1, (1,), generator=g))
        top = int(torch.randint(0, height - h + 1, (1,), generator=g))
        left = int(torch.randint(0, width - w + 1, (1,), generator=g))
        boxes.append([top, left, h, w])
    return torch.tensor(boxes)


@pytest.mark.parametrize(("in_size", "size"), [(32, 32), (32, 48), (64, 24), (40, 32)])
def test_resized_crop_and_flip_match_torchvision(in_size: int, size: int) -> None:
    images = _images(24, in_size)
    boxes = _random_boxes(24, in_size, in_size, seed=in_size + size)
    flip = torch.arange(24) % 2 == 0
    ours = AF.resized_crop(images, boxes, size, flip)
    for i in range(24):
        top, left, h, w = boxes[i].tolist()
        expected = TF.resized_crop(images[i], top, left, h, w, [size, size], antialias=True)
        if flip[i]:
            expected = TF.horizontal_flip(expected)
        torch.testing.assert_close(ours[i], expected, atol=2e-5, rtol=0)


def test_padded_crop_matches_torchvision_pad_then_crop() -> None:
    images = (_images(16) * 255).round().to(torch.uint8)
    g = torch.Generator().manual_seed(1)
    top_left = torch.randint(-4, 5, (16, 2), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    ours = AF.padded_crop(images, top_left, 32, padding=4, flip=flip)
    for i in range(16):
        padded = TF.pad(images[i], [4])
        expected = TF.crop(padded, int(top_left[i, 0]) + 4, int(top_left[i, 1]) + 4, 32, 32)
        if flip[i]:
            expected = TF.horizontal_flip(expected)
        assert torch.equal(ours[i], expected)


@pytest.mark.parametrize(
    ("ours", "theirs", "low", "high"),
    [
        (AF.adjust_brightness, TF.adjust_brightness, 0.0, 2.0),
        (AF.adjust_contrast, TF.adjust_contrast, 0.0, 2.0),
        (AF.adjust_saturation, TF.adjust_saturation, 0.0, 2.0),
        (AF.adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_jitter_ops_match_torchvision_per_sample_factor(
    ours, theirs, low: float, high: float
) -> None:
    images = _images(32)
    factors = low + (high - low) * torch.rand(32, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        ours(images, factors), _per_sample(theirs, images, factors), atol=2e-6, rtol=0
    )


def _torchvision_jitter(
    image: torch.Tensor, factors: list[float], order: list[int]
) -> torch.Tensor:
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for op in order:
        image = ops[op](image, factors[op])
    return image


@pytest.mark.parametrize("compact", [True, False])
def test_color_jitter_matches_torchvision_in_each_samples_order(compact: bool) -> None:
    params = sample_view_params(simclr(32), 64, 32, 32, torch.Generator().manual_seed(3))
    images = _images(64)
    ours = AF.color_jitter(images, params.factors, params.order, params.jitter, compact=compact)
    for i in range(64):
        expected = images[i]
        if params.jitter[i]:
            expected = _torchvision_jitter(
                expected, params.factors[i].tolist(), params.order[i].tolist()
            )
        torch.testing.assert_close(ours[i], expected, atol=5e-6, rtol=0)


def test_grayscale_and_solarize_match_torchvision() -> None:
    images = _images(8)
    torch.testing.assert_close(
        AF.rgb_to_grayscale(images),
        torch.stack([TF.rgb_to_grayscale(x, num_output_channels=3) for x in images]),
    )
    apply = torch.ones(8, dtype=torch.bool)
    assert torch.equal(
        AF.solarize(images, apply, 0.5), torch.stack([TF.solarize(x, 0.5) for x in images])
    )


@pytest.mark.parametrize("use_kornia", [True, False])
def test_gaussian_blur_matches_torchvision_per_sample_sigma(use_kornia: bool) -> None:
    images = _images(12, 96)
    sigma = 0.1 + 1.9 * torch.rand(12, generator=torch.Generator().manual_seed(4))
    ours = AF.gaussian_blur(images, sigma, 9, use_kornia=use_kornia)
    expected = torch.stack(
        [TF.gaussian_blur(x, [9, 9], [float(s), float(s)]) for x, s in zip(images, sigma)]
    )
    torch.testing.assert_close(ours, expected, atol=2e-6, rtol=0)


def _torchvision_view(
    image: torch.Tensor, recipe: ViewRecipe, p: ViewParams, i: int, mean, std
) -> torch.Tensor:
    """One view of one image by torchvision's functional ops, with the parameters we drew."""
    top, left, h, w = p.boxes[i].tolist()
    if recipe.crop == "padded":
        pad = recipe.crop_padding
        x = TF.crop(TF.pad(image, [pad]), top + pad, left + pad, recipe.size, recipe.size)
    elif recipe.crop == "none" and image.shape[-1] == recipe.size:
        x = image
    else:
        x = TF.resized_crop(image, top, left, h, w, [recipe.size, recipe.size], antialias=True)
    if recipe.flip_p > 0 and p.flip[i]:
        x = TF.horizontal_flip(x)
    if recipe.uses_jitter and p.jitter[i]:
        factors = p.factors[i].tolist()
        order = [op for op in p.order[i].tolist() if op != 3 or recipe.hue > 0]
        x = _torchvision_jitter(x, factors, order)
    if recipe.gray_p > 0 and p.gray[i]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    if recipe.blur_p > 0 and p.sigma[i] > 0:
        sigma = float(p.sigma[i])
        x = TF.gaussian_blur(x, [recipe.kernel_size] * 2, [sigma, sigma])
    if recipe.solarize_p > 0 and p.solarize[i]:
        x = TF.solarize(x, recipe.solarize_threshold)
    return TF.normalize(x, list(mean), list(std))


@pytest.mark.parametrize(
    ("name", "recipe", "in_size"),
    [
        ("simclr 32", simclr(32), 32),
        ("mocov2 64", mocov2(64), 64),
        ("byol 96 view 1", byol(96)[0], 96),
        ("byol 96 view 2", byol(96)[1], 96),
        ("byol 96 view 2 every op", byol(96, gray_p=0.5, solarize_p=0.5)[1], 96),
        ("simclr 24 from 48", simclr(24), 48),
        ("linear probe 32", linear_probe(32), 32),
        ("identity 32", identity(32), 32),
        ("identity 32 from 48", identity(32), 48),
    ],
)
def test_whole_view_matches_torchvision_chain(name: str, recipe: ViewRecipe, in_size: int) -> None:
    n = 24
    images = _images(n, in_size, seed=100)
    params = sample_view_params(recipe, n, in_size, in_size, torch.Generator().manual_seed(5))
    mean, std = DATASET_NORMALIZATION["imagenet"]  # type: ignore[misc]
    ours = apply_view(images, recipe, params, mean, std)
    for i in range(n):
        expected = _torchvision_view(images[i], recipe, params, i, mean, std)
        torch.testing.assert_close(ours[i], expected, atol=1e-4, rtol=0, msg=f"{name}, sample {i}")


def _ks_distance(a: list[float], b: list[float]) -> float:
    a, b = sorted(a), sorted(b)
    return max(
        abs(bisect.bisect_right(a, v) / len(a) - bisect.bisect_right(b, v) / len(b))
        for v in set(a) | set(b)
    )


@pytest.mark.parametrize(
    ("height", "width", "scale"), [(32, 32, (0.08, 1.0)), (32, 64, (0.5, 1.0))]
)
def test_crop_box_distribution_matches_torchvision_random_resized_crop(
    height: int, width: int, scale
) -> None:
    n = 10_000
    torch.manual_seed(0)
    transform = tv2.RandomResizedCrop(32, scale=scale)
    image = torch.zeros(3, height, width)
    theirs = [transform.make_params([image]) for _ in range(n)]
    ours = sample_view_params(
        simclr(32, crop_scale=scale), n, height, width, torch.Generator().manual_seed(0)
    ).boxes
    for key, column in (("height", 2), ("width", 3), ("top", 0), ("left", 1)):
        distance = _ks_distance(ours[:, column].tolist(), [float(p[key]) for p in theirs])
        assert distance < 0.03, key  # P(KS > 0.03) < 0.1% for equal distributions at n = 10k


def test_padded_crop_distribution_matches_torchvision_random_crop() -> None:
    n = 5_000
    torch.manual_seed(0)
    transform = tv2.RandomCrop(32, padding=4)
    theirs = [transform.make_params([torch.zeros(3, 32, 32)]) for _ in range(n)]
    boxes = sample_view_params(linear_probe(32), n, 32, 32, torch.Generator().manual_seed(0)).boxes
    their_tops = [p["top"] - 4 for p in theirs]
    assert set(boxes[:, 0].tolist()) == set(their_tops) == set(range(-4, 5))
    assert _ks_distance(boxes[:, 0].tolist(), their_tops) < 0.04


def test_jitter_factor_ranges_match_torchvision_color_jitter() -> None:
    for recipe in (simclr(32), byol(32)[0]):
        jitter = tv2.ColorJitter(recipe.brightness, recipe.contrast, recipe.saturation, recipe.hue)
        params = sample_view_params(recipe, 20_000, 32, 32, torch.Generator().manual_seed(6))
        for column, bounds in enumerate(
            (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
        ):
            low, high = (
                params.factors[:, column].min().item(),
                params.factors[:, column].max().item(),
            )
            assert low >= bounds[0] - 1e-6 and high <= bounds[1] + 1e-6
            assert low == pytest.approx(bounds[0], abs=0.01) and high == pytest.approx(
                bounds[1], abs=0.01
            )


def test_view_statistics_match_the_torchvision_simclr_pipeline() -> None:
    # The end-to-end distribution: per-view mean intensity and colorfulness over 2,000 views of
    # the same images, ours vs torchvision's RandomResizedCrop/flip/ColorJitter/Grayscale compose.
    images = _images(100)
    repeats = 20
    torch.manual_seed(0)
    pipeline = tv2.Compose(
        [
            tv2.RandomResizedCrop(32, scale=(0.08, 1.0)),
            tv2.RandomHorizontalFlip(),
            tv2.RandomApply([tv2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            tv2.RandomGrayscale(p=0.2),
        ]
    )
    theirs = torch.stack([pipeline(image) for _ in range(repeats) for image in images])
    batch = images.repeat(repeats, 1, 1, 1)
    recipe = simclr(32)
    params = sample_view_params(recipe, len(batch), 32, 32, torch.Generator().manual_seed(7))
    ours = apply_view(batch, recipe, params)

    def stats(views: torch.Tensor) -> tuple[list[float], list[float]]:
        mean = views.mean(dim=(1, 2, 3))
        colorfulness = (views - views.mean(dim=1, keepdim=True)).abs().mean(dim=(1, 2, 3))
        return mean.tolist(), colorfulness.tolist()

    (our_mean, our_color), (their_mean, their_color) = stats(ours), stats(theirs)
    # P(KS > 0.062) < 0.1% for equal distributions at 2,000 views per side.
    assert _ks_distance(our_mean, their_mean) < 0.062
    assert _ks_distance(our_color, their_color) < 0.062
