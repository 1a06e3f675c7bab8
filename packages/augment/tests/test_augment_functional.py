"""Each batched op against a computation by hand (Python loops, colorsys) on fixed parameters."""

from __future__ import annotations

import colorsys
import math

import pytest
import torch

from contrastkit.augment import functional as AF

LUMA = (0.2989, 0.587, 0.114)


def _luma_by_hand(pixel: list[float]) -> float:
    return LUMA[0] * pixel[0] + LUMA[1] * pixel[1] + LUMA[2] * pixel[2]


def _images(n: int = 4, size: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_brightness_multiplies_and_clamps() -> None:
    x = _images()
    factors = torch.tensor([0.0, 0.5, 1.0, 1.7])
    out = AF.adjust_brightness(x, factors)
    for i, f in enumerate(factors.tolist()):
        torch.testing.assert_close(out[i], (x[i] * f).clamp(0, 1))


def test_contrast_blends_with_mean_luma_per_sample() -> None:
    x = _images(n=3, size=3)
    factors = torch.tensor([0.6, 1.0, 1.4])
    out = AF.adjust_contrast(x, factors)
    for i, f in enumerate(factors.tolist()):
        pixels = x[i].permute(1, 2, 0).reshape(-1, 3).tolist()
        mean = sum(_luma_by_hand(p) for p in pixels) / len(pixels)
        expected = (x[i] * f + (1 - f) * mean).clamp(0, 1)
        torch.testing.assert_close(out[i], expected, atol=1e-6, rtol=0)


def test_saturation_blends_with_luma_and_zero_gives_grayscale() -> None:
    x = _images(n=2, size=3)
    out = AF.adjust_saturation(x, torch.tensor([0.0, 1.5]))
    for row in range(3):
        for col in range(3):
            for i, f in enumerate((0.0, 1.5)):
                pixel = x[i, :, row, col].tolist()
                gray = _luma_by_hand(pixel)
                expected = [min(max(f * v + (1 - f) * gray, 0.0), 1.0) for v in pixel]
                assert out[i, :, row, col].tolist() == pytest.approx(expected, abs=1e-6)


def test_hue_shift_matches_colorsys_pixel_by_pixel() -> None:
    # Quantized values give many gray pixels and ties between channels, the edge cases of HSV.
    x = torch.randint(0, 5, (4, 3, 4, 4), generator=torch.Generator().manual_seed(1)) / 4.0
    x = torch.cat([x, _images(n=2, size=4)])
    shifts = torch.tensor([0.1, -0.1, 0.5, -0.5, 0.25, -0.03])
    out = AF.adjust_hue(x, shifts)
    for i, shift in enumerate(shifts.tolist()):
        for row in range(4):
            for col in range(4):
                h, s, v = colorsys.rgb_to_hsv(*x[i, :, row, col].tolist())
                expected = colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
                assert out[i, :, row, col].tolist() == pytest.approx(expected, abs=1e-5)


def test_hue_shift_zero_and_full_turn_keep_the_image() -> None:
    x = _images()
    torch.testing.assert_close(AF.adjust_hue(x, torch.zeros(4)), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        AF.adjust_hue(x, torch.full((4,), 0.5)), AF.adjust_hue(x, torch.full((4,), -0.5))
    )


def _jitter_by_hand(image: torch.Tensor, factors: list[float], order: list[int]) -> torch.Tensor:
    ops = [AF.adjust_brightness, AF.adjust_contrast, AF.adjust_saturation, AF.adjust_hue]
    out = image.unsqueeze(0)
    for op in order:
        out = ops[op](out, torch.tensor([factors[op]]))
    return out.squeeze(0)


@pytest.mark.parametrize("compact", [True, False])
def test_color_jitter_applies_each_samples_ops_in_its_own_order(compact: bool) -> None:
    n = 24
    x = _images(n=n, size=4, seed=2)
    g = torch.Generator().manual_seed(3)
    factors = torch.stack(
        [
            0.6 + 0.8 * torch.rand(n, generator=g),
            0.6 + 0.8 * torch.rand(n, generator=g),
            0.6 + 0.8 * torch.rand(n, generator=g),
            -0.1 + 0.2 * torch.rand(n, generator=g),
        ],
        dim=1,
    )
    order = torch.rand(n, 4, generator=g).argsort(dim=1)
    apply = torch.rand(n, generator=g) < 0.8
    apply[0], apply[1] = False, True
    x_before = x.clone()
    out = AF.color_jitter(x, factors, order, apply, compact=compact)
    assert torch.equal(x, x_before)  # the input is not modified
    for i in range(n):
        expected = (
            _jitter_by_hand(x[i], factors[i].tolist(), order[i].tolist()) if apply[i] else x[i]
        )
        torch.testing.assert_close(out[i], expected, atol=2e-6, rtol=0)
    # The order matters: reversing it changes the result of a non-trivial sample.
    reversed_out = AF.color_jitter(x, factors, order.flip(1), apply, compact=compact)
    assert not torch.allclose(reversed_out[1], out[1], atol=1e-4)


def test_color_jitter_without_hue_ignores_the_hue_column() -> None:
    x = _images(n=2)
    factors = torch.tensor([[1.2, 0.8, 1.1, 0.3], [0.9, 1.3, 0.7, -0.3]])
    order = torch.tensor([[3, 2, 1, 0], [0, 3, 1, 2]])
    out = AF.color_jitter(x, factors, order, use_hue=False)
    for i in range(2):
        no_hue = factors[i].tolist()
        no_hue[3] = 0.0
        expected = _jitter_by_hand(x[i], no_hue, [op for op in order[i].tolist() if op != 3])
        torch.testing.assert_close(out[i], expected, atol=1e-6, rtol=0)


def test_grayscale_replicates_luma_where_selected() -> None:
    x = _images(n=2, size=2)
    out = AF.rgb_to_grayscale(x, torch.tensor([True, False]))
    torch.testing.assert_close(out[1], x[1])
    for row in range(2):
        for col in range(2):
            gray = _luma_by_hand(x[0, :, row, col].tolist())
            assert out[0, :, row, col].tolist() == pytest.approx([gray] * 3, abs=1e-6)


def _blur_by_hand(image: torch.Tensor, sigma: float, k: int) -> torch.Tensor:
    radius = k // 2
    taps = [math.exp(-(d * d) / (2 * sigma * sigma)) for d in range(-radius, radius + 1)]
    taps = [t / sum(taps) for t in taps]
    channels, height, width = image.shape

    def reflect(i: int, n: int) -> int:
        return -i if i < 0 else 2 * (n - 1) - i if i >= n else i

    out = torch.zeros_like(image)
    for c in range(channels):
        for y in range(height):
            for x in range(width):
                total = 0.0
                for dy in range(-radius, radius + 1):
                    for dx in range(-radius, radius + 1):
                        pixel = image[c, reflect(y + dy, height), reflect(x + dx, width)].item()
                        total += taps[dy + radius] * taps[dx + radius] * pixel
                out[c, y, x] = total
    return out


@pytest.mark.parametrize("use_kornia", [True, False])
def test_gaussian_blur_per_sample_sigma_with_reflect_padding(use_kornia: bool) -> None:
    x = _images(n=3, size=6, seed=4)
    sigma = torch.tensor([0.5, 1.7, 0.0])
    out = AF.gaussian_blur(x, sigma, kernel_size=5, use_kornia=use_kornia)
    torch.testing.assert_close(out[0], _blur_by_hand(x[0], 0.5, 5), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], _blur_by_hand(x[1], 1.7, 5), atol=1e-6, rtol=0)
    assert torch.equal(out[2], x[2])  # sigma 0 = unit impulse, bit-exact identity


def test_solarize_inverts_at_and_above_threshold_where_selected() -> None:
    x = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]).view(1, 1, 1, 5).expand(2, 3, 1, 5).contiguous()
    out = AF.solarize(x, torch.tensor([True, False]), threshold=0.5)
    assert out[0, 0, 0].tolist() == [0.0, 0.25, 0.5, 0.25, 0.0]
    assert torch.equal(out[1], x[1])


def test_normalize_per_channel_in_place() -> None:
    x = torch.ones(2, 3, 2, 2)
    out = AF.normalize(x, (0.5, 0.25, 1.0), (0.5, 0.25, 2.0))
    assert out.data_ptr() == x.data_ptr()
    assert out[:, 0].unique().tolist() == [1.0]
    assert out[:, 1].unique().tolist() == [3.0]
    assert out[:, 2].unique().tolist() == [0.0]


def _bilinear_by_hand(image: torch.Tensor, box: list[int], size: int) -> torch.Tensor:
    """Upsampling resize of a crop, align_corners=False, edges clamped to the crop."""
    top, left, h, w = box
    crop = image[:, top : top + h, left : left + w]
    out = torch.zeros(image.shape[0], size, size)
    for i in range(size):
        sy = min(max((i + 0.5) * h / size - 0.5, 0.0), h - 1.0)
        y0 = math.floor(sy)
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for j in range(size):
            sx = min(max((j + 0.5) * w / size - 0.5, 0.0), w - 1.0)
            x0 = math.floor(sx)
            x1, fx = min(x0 + 1, w - 1), sx - x0
            out[:, i, j] = (
                crop[:, y0, x0] * (1 - fy) * (1 - fx)
                + crop[:, y0, x1] * (1 - fy) * fx
                + crop[:, y1, x0] * fy * (1 - fx)
                + crop[:, y1, x1] * fy * fx
            )
    return out


def test_resized_crop_upsampling_is_bilinear_of_the_box_and_flip_mirrors() -> None:
    x = _images(n=3, size=8, seed=5)
    boxes = torch.tensor([[0, 0, 8, 8], [2, 1, 3, 5], [4, 3, 4, 2]])
    out = AF.resized_crop(x, boxes, 8, flip=torch.tensor([False, False, True]))
    torch.testing.assert_close(out[0], x[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], _bilinear_by_hand(x[1], [2, 1, 3, 5], 8), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        out[2], _bilinear_by_hand(x[2], [4, 3, 4, 2], 8).flip(2), atol=1e-6, rtol=0
    )


def test_resized_crop_downsampling_is_antialiased() -> None:
    # Halving a crop: the antialiased bilinear (triangle) filter, widened 2x, puts weights
    # 1/8, 3/8, 3/8, 1/8 on the 4 nearest source pixels (renormalized at the border).
    row = torch.arange(16, dtype=torch.float32) ** 2
    x = row.view(1, 1, 1, 16).expand(1, 3, 16, 16).contiguous()
    out = AF.resized_crop(x, torch.tensor([[0, 0, 16, 16]]), 8)
    expected = []
    for i in range(8):
        taps = {2 * i - 1: 1, 2 * i: 3, 2 * i + 1: 3, 2 * i + 2: 1}
        taps = {j: w for j, w in taps.items() if 0 <= j < 16}
        expected.append(sum(w * row[j].item() for j, w in taps.items()) / sum(taps.values()))
    for r in range(8):
        assert out[0, 1, r].tolist() == pytest.approx(expected, rel=1e-6)


def test_padded_crop_is_a_zero_filled_window_by_hand() -> None:
    x = torch.randint(
        1, 256, (3, 3, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(6)
    )
    top_left = torch.tensor([[-2, -2], [0, 1], [2, -1]])
    flip = torch.tensor([False, True, False])
    out = AF.padded_crop(x, top_left, 6, padding=2, flip=flip)
    assert out.dtype == torch.uint8 and out.shape == (3, 3, 6, 6)
    for n, (top, left) in enumerate(top_left.tolist()):
        for i in range(6):
            for j in range(6):
                jj = 5 - j if flip[n] else j
                y, xcol = top + i, left + jj
                inside = 0 <= y < 6 and 0 <= xcol < 6
                expected = x[n, :, y, xcol] if inside else torch.zeros(3, dtype=torch.uint8)
                assert torch.equal(out[n, :, i, j], expected)


def test_horizontal_flip_mirrors_only_the_flagged_samples_by_hand() -> None:
    x = torch.randint(
        0, 256, (3, 2, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(7)
    )
    flip = torch.tensor([True, False, True])
    out = AF.horizontal_flip(x, flip)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    for n in range(3):
        for j in range(5):
            source = 4 - j if flip[n] else j
            assert torch.equal(out[n, :, :, j], x[n, :, :, source])
    with pytest.raises(ValueError, match="flip must have shape"):
        AF.horizontal_flip(x, torch.ones(2, dtype=torch.bool))


def test_functional_re_exports_the_ops_of_color_blur_and_geometry() -> None:
    from contrastkit.augment import blur, color, geometry

    families = {"color": color, "blur": blur, "geometry": geometry}
    used = set()
    for name in AF.__all__:
        found = [family for family, module in families.items() if hasattr(module, name)]
        assert len(found) == 1, (name, found)  # each op has exactly one home
        assert getattr(AF, name) is getattr(families[found[0]], name)
        used.add(found[0])
    assert used == set(families)
    assert AF.gaussian_blur.__module__ == "contrastkit.augment.blur"
    assert AF.color_jitter.__module__ == "contrastkit.augment.color"
    assert AF.resized_crop.__module__ == "contrastkit.augment.geometry"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: AF.adjust_brightness(torch.rand(3, 5, 5), torch.ones(3)), r"\(N, C, H, W\)"),
        (
            lambda: AF.adjust_contrast(torch.rand(2, 3, 4, 4), torch.ones(3)),
            "factor must have shape",
        ),
        (lambda: AF.adjust_saturation(torch.rand(2, 1, 4, 4), torch.ones(2)), "RGB"),
        (
            lambda: AF.adjust_hue(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2)),
            "floating point",
        ),
        (
            lambda: AF.color_jitter(torch.rand(2, 3, 4, 4), torch.ones(2, 3), torch.zeros(2, 4)),
            "factors",
        ),
        (
            lambda: AF.rgb_to_grayscale(torch.rand(2, 3, 4, 4), torch.ones(3, dtype=torch.bool)),
            "apply",
        ),
        (lambda: AF.gaussian_blur(torch.rand(2, 3, 8, 8), torch.ones(2), 4), "odd"),
        (lambda: AF.gaussian_blur(torch.rand(2, 3, 3, 3), torch.ones(2), 9), "at least 5 px"),
        (lambda: AF.solarize(torch.rand(2, 3, 4, 4), torch.ones(2, 1, dtype=torch.bool)), "apply"),
        (lambda: AF.normalize(torch.rand(2, 3, 4, 4), (0.5,), (0.5,)), "one entry per channel"),
        (lambda: AF.resized_crop(torch.rand(2, 3, 4, 4), torch.zeros(2, 3), 4), "boxes"),
        (
            lambda: AF.padded_crop(torch.rand(2, 3, 4, 4), torch.zeros(2, 2), 4, padding=-1),
            "padding",
        ),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
