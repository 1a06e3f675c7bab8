"""The 0.2 recipe names: one tuple of recipes per view from every recipe function, and the 0.1
names as deprecated aliases that warn and give exactly what they gave before."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from contrastkit.augment import (
    IMAGE_RECIPES,
    RENAMED_RECIPES,
    TABULAR_RECIPES,
    MultiViewAugment,
    NoiseRecipe,
    ViewRecipe,
    byol,
    byol_views,
    cifar_eval,
    gaussian_noise,
    gaussian_noise_views,
    identity,
    identity_views,
    isd,
    isd_views,
    linear_probe,
    make_views,
    mocov2,
    mocov2_views,
    probe_views,
    simclr,
    simclr_views,
)

IMAGE_VIEW_COUNTS = {
    "simclr_views": 2,
    "mocov2_views": 2,
    "byol_views": 2,
    "isd_views": 2,
    "probe_views": 1,
    "identity_views": 1,
    "dino_views": 10,
    "swav_views": 8,
}
MULTI_CROP = ("dino_views", "swav_views")
# Old make_views string -> new string, written out here rather than read from RENAMED_RECIPES.
OLD_TO_NEW = {
    "simclr": "simclr_views",
    "mocov2": "mocov2_views",
    "byol": "byol_views",
    "isd": "isd_views",
    "linear_probe": "probe_views",
    "cifar_eval": "probe_views",
    "identity": "identity_views",
    "gaussian_noise": "gaussian_noise_views",
}


def _uint8_batch(n: int = 6, size: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def test_registries_hold_exactly_the_new_names() -> None:
    assert list(IMAGE_RECIPES) == list(IMAGE_VIEW_COUNTS)
    assert list(TABULAR_RECIPES) == [
        "identity_views",
        "gaussian_noise_views",
        "input_dropout_views",
    ]
    assert dict(RENAMED_RECIPES) == OLD_TO_NEW
    assert not set(RENAMED_RECIPES) & (set(IMAGE_RECIPES) | set(TABULAR_RECIPES))


@pytest.mark.parametrize("name", list(IMAGE_VIEW_COUNTS))
@pytest.mark.parametrize("size", [32, 96])
def test_every_image_recipe_returns_a_tuple_of_recipes_one_per_view(name: str, size: int) -> None:
    views = IMAGE_RECIPES[name](size)
    assert isinstance(views, tuple) and len(views) == IMAGE_VIEW_COUNTS[name]
    assert all(isinstance(v, ViewRecipe) for v in views)
    # Every view has the global size, but for the multi-crop local views (from the third view on).
    assert all(v.size == size for v in views[:2])
    assert all(
        v.size == (size if name not in MULTI_CROP else round(size * 96 / 224)) for v in views[2:]
    )
    augment = make_views(name, size, seed=0)
    assert augment.views == views and augment.num_views == len(views)
    assert len(augment(_uint8_batch(size=size))) == len(views)


def test_overrides_change_every_view_of_a_recipe() -> None:
    for name in IMAGE_VIEW_COUNTS:
        assert all(v.flip_p == 0.0 for v in IMAGE_RECIPES[name](32, flip_p=0.0))


def test_tabular_recipes_return_two_noise_views() -> None:
    assert gaussian_noise_views() == (NoiseRecipe(0.1), NoiseRecipe(0.1))
    assert gaussian_noise_views(0.3) == (NoiseRecipe(0.3), NoiseRecipe(0.3))
    assert TABULAR_RECIPES["identity_views"]() == (NoiseRecipe(0.0), NoiseRecipe(0.0))
    assert TABULAR_RECIPES["gaussian_noise_views"](std=0.2) == gaussian_noise_views(0.2)
    for name in TABULAR_RECIPES:
        views = TABULAR_RECIPES[name]()
        assert isinstance(views, tuple) and len(views) == 2
        assert make_views(name, 1, "tabular", seed=0).views == views


def test_pairs_hold_the_published_asymmetry() -> None:
    first, second = simclr_views(32)
    assert first == second and first.crop_scale == (0.08, 1.0)
    assert mocov2_views(32)[0].crop_scale == (0.2, 1.0)
    view1, view2 = byol_views(224)
    assert (view1.blur_p, view1.solarize_p, view2.blur_p, view2.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    weak, strong = isd_views(96)
    assert not weak.uses_color and strong == mocov2_views(96)[1]
    (plain,) = identity_views(64)
    assert plain.crop == "none" and plain.flip_p == 0.0


def test_new_names_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in IMAGE_RECIPES:
            make_views(name, 32, seed=0)
            IMAGE_RECIPES[name](32)
        for name in TABULAR_RECIPES:
            make_views(name, 1, "tabular", seed=0)
        gaussian_noise_views()


@pytest.mark.parametrize(
    ("call_old", "call_new", "replacement"),
    [
        (lambda: simclr(32, gray_p=0.1), lambda: simclr_views(32, gray_p=0.1)[0], "simclr_views"),
        (lambda: simclr(96), lambda: simclr_views(96)[1], "simclr_views"),
        (lambda: mocov2(96), lambda: mocov2_views(96)[0], "mocov2_views"),
        (lambda: byol(96, hue=0.0), lambda: byol_views(96, hue=0.0), "byol_views"),
        (lambda: isd(32), lambda: isd_views(32), "isd_views"),
        (lambda: linear_probe(40), lambda: probe_views(40)[0], "probe_views"),
        (lambda: cifar_eval(flip_p=0.0), lambda: probe_views(32, flip_p=0.0)[0], "probe_views"),
        (lambda: identity(64), lambda: identity_views(64)[0], "identity_views"),
        (lambda: gaussian_noise(0.3), lambda: gaussian_noise_views(0.3)[0], "gaussian_noise_views"),
    ],
)
def test_old_function_warns_and_returns_what_the_new_one_gives(
    call_old: Callable[[], object], call_new: Callable[[], object], replacement: str
) -> None:
    with pytest.warns(DeprecationWarning, match=rf"deprecated.*use {replacement}") as caught:
        old = call_old()
    assert len(caught) == 1
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert old == call_new()


def test_old_functions_keep_their_0_1_return_types() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for single in (simclr(32), mocov2(32), linear_probe(32), cifar_eval(), identity(32)):
            assert isinstance(single, ViewRecipe)
        for pair in (byol(32), isd(32)):
            assert isinstance(pair, tuple) and len(pair) == 2
        assert isinstance(gaussian_noise(), NoiseRecipe)


def test_probe_views_32_is_the_old_cifar_eval() -> None:
    with pytest.warns(DeprecationWarning, match="probe_views"):
        old = cifar_eval()
    assert probe_views(32) == (old,)
    assert old.crop == "padded" and old.crop_padding == 4 and not old.uses_color


@pytest.mark.parametrize(
    ("old", "dataset", "size"),
    [
        ("simclr", "cifar10", 32),
        ("mocov2", "cifar100", 32),
        ("byol", "imagenet", 64),
        ("isd", "cifar10", 32),
        ("linear_probe", "cifar10", 32),
        ("cifar_eval", "cifar10", 40),  # make_views("cifar_eval") always took the size
        ("identity", "cifar10", 40),
        ("identity", "tabular", 1),
        ("gaussian_noise", "tabular", 1),
    ],
)
def test_make_views_old_string_warns_and_gives_identical_views(
    old: str, dataset: str, size: int
) -> None:
    new = OLD_TO_NEW[old]
    with pytest.warns(DeprecationWarning, match=rf"'{old}' is deprecated.*use '{new}'") as caught:
        old_views = make_views(old, size, dataset, seed=7)
    assert caught[0].filename == __file__
    new_views = make_views(new, size, dataset, seed=7)
    assert old_views.views == new_views.views and old_views.num_views == new_views.num_views
    assert (old_views.mean, old_views.std) == (new_views.mean, new_views.std)
    batch = torch.randn(8, 5) if dataset == "tabular" else _uint8_batch(size=40)
    for a, b in zip(old_views(batch), new_views(batch), strict=True):
        assert torch.equal(a, b)


def test_unknown_recipe_suggests_the_new_name() -> None:
    with pytest.raises(ValueError, match=r"unknown recipe 'moco'.*did you mean 'mocov2_views'"):
        make_views("moco", 32)
    with pytest.raises(ValueError, match=r"did you mean 'simclr_views'"):
        make_views("simclr_view", 32)
    with pytest.raises(ValueError, match=r"did you mean 'probe_views'"):
        make_views("linear", 32)
    with pytest.raises(ValueError, match=r"'simclr'.*'tabular'.*recipe for image datasets"):
        make_views("simclr", 32, "tabular")
    with pytest.raises(ValueError, match=r"recipe for dataset 'tabular'"):
        make_views("gaussian_noise_views", 32)
    with pytest.raises(ValueError, match=r"recipe must be a recipe name \(str\)"):
        make_views(None, 32)  # type: ignore[arg-type]


def test_nested_recipe_tuple_is_rejected_with_a_hint() -> None:
    with pytest.raises(ValueError, match="pass their tuple itself"):
        MultiViewAugment([simclr_views(32)])  # type: ignore[list-item]
    assert MultiViewAugment(byol_views(32), seed=0).num_views == 2


def test_readme_example_runs_and_uses_the_new_names() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "the README has no python example"
    for block in blocks:
        for old in OLD_TO_NEW:
            assert f'"{old}"' not in block, f"README example uses the deprecated name {old!r}"
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            exec(compile(block, "packages/augment/README.md", "exec"), {})
