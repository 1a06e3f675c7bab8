"""Recipe presets hold their published values, and every field is validated by name."""

from __future__ import annotations

import dataclasses

import pytest

from contrastkit.augment import (
    NoiseRecipe,
    ViewRecipe,
    byol,
    cifar_eval,
    default_blur_kernel_size,
    gaussian_noise,
    identity,
    isd,
    linear_probe,
    mocov2,
    simclr,
)


def test_simclr_preset_matches_the_paper_and_blurs_only_from_64px() -> None:
    small, large = simclr(32), simclr(96)
    assert small.crop == "resized" and small.crop_scale == (0.08, 1.0)
    assert small.crop_ratio == pytest.approx((3 / 4, 4 / 3))
    assert (small.brightness, small.contrast, small.saturation, small.hue) == (0.4, 0.4, 0.4, 0.1)
    assert (small.flip_p, small.jitter_p, small.gray_p) == (0.5, 0.8, 0.2)
    assert small.blur_p == 0.0 and large.blur_p == 0.5
    assert large.kernel_size == 9 and large.blur_sigma == (0.1, 2.0)
    assert small.solarize_p == 0.0


def test_mocov2_differs_from_simclr_only_in_crop_scale() -> None:
    for size in (32, 224):
        assert mocov2(size) == dataclasses.replace(simclr(size), crop_scale=(0.2, 1.0))


def test_byol_pair_is_asymmetric_in_blur_and_solarize() -> None:
    first, second = byol(224)
    assert (first.blur_p, first.solarize_p) == (1.0, 0.0)
    assert (second.blur_p, second.solarize_p) == (0.1, 0.2)
    assert first.saturation == second.saturation == 0.2
    assert first.kernel_size == second.kernel_size == 23
    small_first, small_second = byol(32)
    assert small_first.blur_p == small_second.blur_p == 0.0
    assert small_second.solarize_p == 0.2


def test_isd_gives_weak_teacher_view_then_strong_student_view() -> None:
    weak, strong = isd(96)
    assert weak.crop_scale == (0.2, 1.0) and weak.flip_p == 0.5
    assert (weak.jitter_p, weak.gray_p, weak.blur_p, weak.solarize_p) == (0.0, 0.0, 0.0, 0.0)
    assert not weak.uses_color
    assert strong == mocov2(96)


def test_eval_recipes() -> None:
    probe = linear_probe(32)
    assert probe.crop == "padded" and probe.crop_padding == 4 and probe.flip_p == 0.5
    assert not probe.uses_color and probe.blur_p == 0.0
    assert cifar_eval() == probe
    plain = identity(64)
    assert plain.crop == "none" and plain.flip_p == 0.0 and not plain.uses_color


@pytest.mark.parametrize(("size", "kernel"), [(32, 3), (64, 7), (96, 9), (224, 23), (5, 1)])
def test_default_blur_kernel_is_odd_tenth_of_size(size: int, kernel: int) -> None:
    assert default_blur_kernel_size(size) == kernel


def test_overrides_change_one_field_and_lists_become_tuples() -> None:
    recipe = simclr(32, gray_p=0.0, crop_scale=[0.3, 0.9])
    assert recipe.gray_p == 0.0 and recipe.crop_scale == (0.3, 0.9)
    assert dataclasses.replace(recipe, gray_p=0.2, crop_scale=(0.08, 1.0)) == simclr(32)
    assert isd(32, crop_scale=(0.5, 1.0))[0].crop_scale == (0.5, 1.0)


def test_unknown_override_lists_valid_fields() -> None:
    with pytest.raises(ValueError, match=r"unknown ViewRecipe field\(s\) \['grey_p'\].*gray_p"):
        simclr(32, grey_p=0.1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", 0),
        ("size", 2.5),
        ("size", True),
        ("crop", "random"),
        ("crop_scale", (0.0, 1.0)),
        ("crop_scale", (0.5, 0.4)),
        ("crop_scale", (0.5, 1.5)),
        ("crop_scale", (0.5,)),
        ("crop_ratio", (0.0, 1.0)),
        ("crop_padding", -1),
        ("flip_p", 1.5),
        ("jitter_p", -0.1),
        ("gray_p", 2.0),
        ("blur_p", -1.0),
        ("solarize_p", 1.01),
        ("brightness", -0.1),
        ("contrast", float("nan")),
        ("saturation", -1.0),
        ("hue", 0.6),
        ("hue", -0.1),
        ("blur_sigma", (0.0, 2.0)),
        ("blur_kernel_size", 4),
        ("blur_kernel_size", 0),
        ("solarize_threshold", 1.5),
    ],
)
def test_bad_field_raises_value_error_naming_it(field: str, value: object) -> None:
    kwargs = {"size": 32, field: value}
    with pytest.raises(ValueError, match=field):
        ViewRecipe(**kwargs)  # type: ignore[arg-type]


def test_noise_recipe() -> None:
    assert NoiseRecipe().std == 0.0
    assert gaussian_noise().std == 0.1 and gaussian_noise(0.5).std == 0.5
    with pytest.raises(ValueError, match="std"):
        NoiseRecipe(std=-1.0)
