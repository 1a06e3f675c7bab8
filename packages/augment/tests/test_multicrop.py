"""Multi-crop views: DINO's and SwAV's recipes against the originals' values, and one batched
call per resolution giving exactly the views of one call per view."""

from __future__ import annotations

import dataclasses
import io
import math

import pytest
import torch

import contrastkit.augment.multiview as multiview
from contrastkit.augment import (
    DATASET_NORMALIZATION,
    IMAGE_RECIPES,
    MultiViewAugment,
    ViewRecipe,
    apply_view,
    default_local_size,
    dino_views,
    group_views,
    make_views,
    sample_view_params,
    simclr_views,
    swav_views,
)

CIFAR_MEAN, CIFAR_STD = DATASET_NORMALIZATION["cifar10"]  # type: ignore[misc]


def _uint8_batch(n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def _one_by_one(augment: MultiViewAugment, batch: torch.Tensor) -> list[torch.Tensor]:
    """The views as one apply_view call per view, with the parameters ``augment`` draws next."""
    params = augment.sample_params(batch)
    return [
        apply_view(batch, recipe, p, augment.mean, augment.std)  # type: ignore[arg-type]
        for recipe, p in zip(augment.views, params)
    ]


# ------------------------------------------------------------------------------------------------
# The recipes hold the originals' numbers (written out here from the original sources).


def test_dino_views_hold_the_values_of_data_augmentation_dino() -> None:
    # facebookresearch/dino main_dino.py DataAugmentationDINO + get_args_parser defaults:
    # global_crops_scale (0.4, 1.), local_crops_number 8, local_crops_scale (0.05, 0.4),
    # RandomResizedCrop(224) / (96); ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8; RandomGrayscale 0.2;
    # GaussianBlur(1.0) / GaussianBlur(0.1) + Solarization(0.2) / GaussianBlur(p=0.5).
    views = dino_views(224)
    assert len(views) == 10
    assert [v.size for v in views] == [224, 224] + [96] * 8
    assert [v.crop_scale for v in views] == [(0.4, 1.0)] * 2 + [(0.05, 0.4)] * 8
    assert [v.blur_p for v in views] == [1.0, 0.1] + [0.5] * 8
    assert [v.solarize_p for v in views] == [0.0, 0.2] + [0.0] * 8
    for v in views:
        assert (v.brightness, v.contrast, v.saturation, v.hue, v.jitter_p) == (
            0.4,
            0.4,
            0.2,
            0.1,
            0.8,
        )
        assert (v.gray_p, v.flip_p, v.blur_sigma, v.crop) == (0.2, 0.5, (0.1, 2.0), "resized")
        assert v.kernel_size == 23  # one kernel for all views: the 224 px default
    assert views[2:] == (views[2],) * 8


def test_swav_views_hold_the_values_of_multicrop_dataset() -> None:
    # facebookresearch/swav scripts/swav_800ep_pretrain.sh: --nmb_crops 2 6 --size_crops 224 96
    # --min_scale_crops 0.14 0.05 --max_scale_crops 1. 0.14; src/multicropdataset.py:
    # get_color_distortion(s=1) = ColorJitter(0.8, 0.8, 0.8, 0.2) p 0.8 + RandomGrayscale 0.2,
    # RandomGaussianBlur: p 0.5, sigma 0.1 + 1.9 * U(0, 1), cv2 kernel (23, 23); flip 0.5.
    views = swav_views(224)
    assert len(views) == 8
    assert [v.size for v in views] == [224, 224] + [96] * 6
    assert [v.crop_scale for v in views] == [(0.14, 1.0)] * 2 + [(0.05, 0.14)] * 6
    for v in views:
        assert (v.brightness, v.contrast, v.saturation, v.hue, v.jitter_p) == (
            0.8,
            0.8,
            0.8,
            0.2,
            0.8,
        )
        assert (v.gray_p, v.flip_p, v.blur_p, v.blur_sigma) == (0.2, 0.5, 0.5, (0.1, 2.0))
        assert (v.solarize_p, v.kernel_size) == (0.0, 23)
    assert views[0] == views[1] and views[2:] == (views[2],) * 6


@pytest.mark.parametrize(
    ("size", "local"), [(224, 96), (96, 41), (64, 27), (32, 14), (16, 7), (8, 3), (2, 1), (1, 1)]
)
def test_local_size_is_96_224ths_of_the_global_size_rounded(size: int, local: int) -> None:
    assert default_local_size(size) == local
    assert local == max(1, math.floor(size * 96 / 224 + 0.5))
    assert dino_views(size, num_local=1)[-1].size == local
    assert swav_views(size, num_local=1)[-1].size == local


def test_options_change_the_crops() -> None:
    views = dino_views(
        32, num_local=3, local_size=12, global_scale=[0.3, 0.9], local_scale=(0.1, 0.2)
    )
    assert [v.size for v in views] == [32, 32, 12, 12, 12]
    assert [v.crop_scale for v in views] == [(0.3, 0.9)] * 2 + [(0.1, 0.2)] * 3
    assert len(swav_views(32, num_local=0)) == 2 and len(dino_views(32, num_local=0)) == 2
    # overrides reach every view; blur follows the global size and blur_min_size.
    assert all(v.gray_p == 0.0 for v in swav_views(32, gray_p=0.0))
    assert all(v.blur_p == 0.0 for v in dino_views(32))
    assert [v.blur_p for v in dino_views(32, num_local=1, blur_min_size=0)] == [1.0, 0.1, 0.5]
    assert all(v.kernel_size == 13 for v in swav_views(32, blur_kernel_size=13, blur_min_size=0))
    assert all(v.kernel_size == 3 for v in swav_views(32))  # default_blur_kernel_size(32)


def test_make_views_takes_the_multicrop_options() -> None:
    # What data.augment_options holds in a pipeline config (YAML gives lists).
    options = {"num_local": 2, "local_size": 12, "local_scale": [0.1, 0.3], "blur_min_size": 0}
    augment = make_views("dino_views", 32, "cifar10", seed=0, **options)
    assert augment.views == dino_views(32, **options)
    assert augment.num_views == 4 and augment.view_groups == ((0, 1), (2, 3))
    shapes = [tuple(v.shape) for v in augment(_uint8_batch(4))]
    assert shapes == [(4, 3, 32, 32)] * 2 + [(4, 3, 12, 12)] * 2
    assert {"dino_views", "swav_views"} <= set(IMAGE_RECIPES)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_local": -1}, r"num_local must be an int >= 0.*-1"),
        ({"num_local": 1.5}, r"num_local must be an int >= 0.*1\.5"),
        ({"num_local": True}, r"num_local must be an int >= 0.*True"),
        ({"local_size": 0}, r"local_size must be None or an int >= 1.*0"),
        ({"global_scale": (0.5, 0.2)}, r"global_scale must be a finite pair with low <= high"),
        ({"local_scale": (0.0, 0.3)}, r"local_scale must satisfy 0 < low <= high <= 1"),
        ({"local_scale": (0.1, 1.5)}, r"local_scale must satisfy 0 < low <= high <= 1"),
        ({"global_scale": "big"}, r"global_scale must be a pair of numbers"),
        ({"crop_scale": (0.2, 1.0)}, r"use global_scale=.*local_scale=.*crop_scale=\(0\.2, 1\.0\)"),
        ({"colour": 1}, r"unknown ViewRecipe field\(s\) \['colour'\]"),
        ({"blur_min_size": -1}, r"blur_min_size must be an int >= 0"),
        ({"gray_p": 2.0}, r"gray_p must be a probability in \[0, 1\], got 2\.0"),
        (
            {"local_size": 4, "blur_kernel_size": 9, "blur_min_size": 0},
            r"blur_kernel_size 9 needs local crops of at least 5 px.*local_size=4",
        ),
    ],
)
@pytest.mark.parametrize("recipe", [dino_views, swav_views])
def test_bad_arguments_raise_value_error(recipe, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        recipe(32, **kwargs)


def test_bad_size_and_options_of_other_recipes_raise_value_error() -> None:
    with pytest.raises(ValueError, match=r"size must be an int >= 1, got 0"):
        dino_views(0)
    with pytest.raises(ValueError, match=r"unknown ViewRecipe field\(s\) \['num_local'\]"):
        make_views("simclr_views", 32, num_local=2)
    # No blur, no kernel constraint: a 1 px local crop is fine then.
    assert dino_views(32, local_size=1, num_local=1)[-1].size == 1


# ------------------------------------------------------------------------------------------------
# One batched call per resolution, equal to one call per view.


@pytest.mark.parametrize("image_size", [16, 40])  # upsampled crops (grid_sample) / antialiased
@pytest.mark.parametrize("name", ["dino_views", "swav_views"])
def test_grouped_views_equal_one_call_per_view(name: str, image_size: int) -> None:
    # 10 x 6 local crops of 40 px images span two CPU chunks of apply_view (54 samples each).
    batch = _uint8_batch(n=10, size=image_size, seed=1)
    kwargs = {"num_local": 6, "blur_min_size": 0, "blur_kernel_size": 5}
    augment = make_views(name, 24, seed=3, **kwargs)
    reference = make_views(name, 24, seed=3, **kwargs)
    for _ in range(2):  # a second batch: the streams stay in step
        got = augment(batch)
        expected = _one_by_one(reference, batch)
        assert len(got) == len(expected) == 8
        for index, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert a.shape == b.shape and torch.equal(a, b), f"view {index}"
        # the views are really different augmentations, not copies of one
        assert not torch.equal(got[0], got[1]) and not torch.equal(got[2], got[3])


def test_grouped_views_equal_one_call_per_view_for_float_input_and_mixed_recipes() -> None:
    base = ViewRecipe(size=12, blur_p=0.5, blur_kernel_size=5)
    views = [
        dataclasses.replace(base, size=20),  # alone: its own size
        base,
        dataclasses.replace(base, jitter_p=0.0, gray_p=1.0, flip_p=0.0, solarize_p=0.7),
        dataclasses.replace(base, hue=0.0),  # hue off: another call (no hue pass)
        dataclasses.replace(base, blur_p=0.0),
    ]
    batch = _uint8_batch(n=6, size=28, seed=2).float().div(255)
    augment = MultiViewAugment(views, mean=CIFAR_MEAN, std=CIFAR_STD, seed=4)
    reference = MultiViewAugment(views, mean=CIFAR_MEAN, std=CIFAR_STD, seed=4)
    assert augment.view_groups == ((0,), (1, 2, 4), (3,))
    for a, b in zip(augment(batch), _one_by_one(reference, batch), strict=True):
        assert torch.equal(a, b)


def test_one_apply_call_per_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    original = multiview.apply_view

    def counting(batch, recipe, params, *args, **kwargs):
        calls.append((batch.shape[0], recipe.size))
        return original(batch, recipe, params, *args, **kwargs)

    monkeypatch.setattr(multiview, "apply_view", counting)
    batch = _uint8_batch(n=4, size=32)
    make_views("dino_views", 32, seed=0)(batch)
    assert calls == [(8, 32), (32, 14)]  # 2 globals, then 8 locals
    calls.clear()
    make_views("swav_views", 32, seed=0, num_local=2)(batch)
    assert calls == [(8, 32), (8, 14)]
    calls.clear()
    make_views("byol_views", 32, seed=0)(batch)  # two views that differ only in probabilities
    assert calls == [(8, 32)]


def test_group_views_groups_only_recipes_equal_but_for_probabilities() -> None:
    first, second, local = dino_views(64, num_local=1)
    groups = group_views([local, first, local, second])
    assert [indices for _, indices in groups] == [(0, 2), (1, 3)]
    merged = groups[1][0]
    # The call runs every op one of its views needs; each view keeps its own probabilities in
    # the parameters it draws.
    assert (merged.blur_p, merged.solarize_p) == (1.0, 0.2)
    assert dataclasses.replace(merged, blur_p=1.0, solarize_p=0.0) == first
    for field, value in [
        ("crop_scale", (0.3, 1.0)),
        ("saturation", 0.3),
        ("blur_sigma", (0.1, 1.0)),
        ("blur_kernel_size", 3),
        ("solarize_threshold", 0.6),
    ]:
        other = dataclasses.replace(first, **{field: value})
        assert len(group_views([first, other])) == 2, field


def test_views_keep_their_order_when_resolutions_interleave() -> None:
    first, _, local = dino_views(32, num_local=1)
    augment = MultiViewAugment([local, first, local, first], seed=0)
    assert augment.view_groups == ((0, 2), (1, 3))
    out = augment(_uint8_batch(n=3))
    assert [v.shape[-1] for v in out] == [14, 32, 14, 32]


def test_a_checkpointed_state_resumes_multicrop_views_exactly() -> None:
    batch = _uint8_batch(n=4, size=32)
    augment = make_views("dino_views", 32, seed=5, num_local=4, blur_min_size=0)
    augment(batch)
    buffer = io.BytesIO()
    torch.save(augment.state_dict(), buffer)
    buffer.seek(0)
    resumed = make_views("dino_views", 32, seed=99, num_local=4, blur_min_size=0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for _ in range(2):
        for a, b in zip(augment(batch), resumed(batch), strict=True):
            assert torch.equal(a, b)


def test_grouping_keeps_the_random_stream_of_the_views() -> None:
    # The parameters are still drawn view by view in order, so a two-view recipe gives the same
    # views as before grouping: view i equals apply_view with the i-th draw of the generator.
    batch = _uint8_batch(n=5, size=32)
    augment = make_views("simclr_views", 32, seed=11)
    generator = torch.Generator().manual_seed(11)
    recipe = simclr_views(32)[0]
    for view in augment(batch):
        params = sample_view_params(recipe, 5, 32, 32, generator)
        assert torch.equal(view, apply_view(batch, recipe, params, CIFAR_MEAN, CIFAR_STD))


def test_grouped_views_equal_one_call_per_view_on_the_gpu_code_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Off the CPU every op runs on the whole batch (identity parameters for untouched samples)
    # and blurs with kornia; force that path here so the exact-identity claim is checked on it.
    from contrastkit.augment import blur, color

    jitter, gaussian_blur = color.color_jitter, blur.gaussian_blur
    monkeypatch.setattr(
        color, "color_jitter", lambda *a, **k: jitter(*a, **{**k, "compact": False})
    )
    monkeypatch.setattr(
        blur, "gaussian_blur", lambda *a, **k: gaussian_blur(*a, **{**k, "use_kornia": True})
    )
    batch = _uint8_batch(n=6, size=20, seed=5)
    kwargs = {"num_local": 3, "blur_min_size": 0, "blur_kernel_size": 5}
    augment = make_views("dino_views", 16, seed=8, **kwargs)
    reference = make_views("dino_views", 16, seed=8, **kwargs)
    for a, b in zip(augment(batch), _one_by_one(reference, batch), strict=True):
        assert torch.equal(a, b)
