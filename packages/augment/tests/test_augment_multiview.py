"""MultiViewAugment and make_views: shapes, independence, determinism, resume, input checks."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch

from contrastkit.augment import (
    DATASET_NORMALIZATION,
    MultiViewAugment,
    ViewRecipe,
    apply_view,
    byol,
    identity,
    isd,
    linear_probe,
    make_views,
    sample_view_params,
    simclr,
)

CIFAR_MEAN, CIFAR_STD = DATASET_NORMALIZATION["cifar10"]  # type: ignore[misc]


def _uint8_batch(n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def _cifar_images(n: int) -> torch.Tensor | None:
    path = (
        Path(__file__).resolve().parents[3]
        / ".."
        / "shared"
        / "data"
        / "cifar10"
        / "cifar10_test.npz"
    )
    if not path.exists():
        return None
    import numpy as np

    with np.load(path) as data:
        return torch.from_numpy(data["x"][:n]).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize(
    ("recipe", "num_views"),
    [
        ("simclr", 2),
        ("mocov2", 2),
        ("byol", 2),
        ("isd", 2),
        ("cifar_eval", 1),
        ("linear_probe", 1),
        ("identity", 1),
    ],
)
def test_make_views_shapes_dtype_and_view_count(recipe: str, num_views: int) -> None:
    augment = make_views(recipe, 32, seed=0)
    views = augment(_uint8_batch())
    assert augment.num_views == num_views == len(views)
    for view in views:
        assert view.shape == (8, 3, 32, 32) and view.dtype == torch.float32
        assert torch.isfinite(view).all()


def test_output_is_normalized_range_of_unit_interval() -> None:
    augment = make_views("simclr", 32, seed=0)
    view = augment(_uint8_batch(64))[0]
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    unit = view * std + mean
    assert unit.min().item() >= -1e-6 and unit.max().item() <= 1 + 1e-6


def test_views_of_larger_images_resize_to_size() -> None:
    batch = _uint8_batch(4, size=48)
    assert make_views("simclr", 24, "imagenet", seed=0)(batch)[0].shape == (4, 3, 24, 24)
    assert make_views("identity", 32, seed=0)(batch)[0].shape == (4, 3, 32, 32)
    assert make_views("byol", 96, "imagenet", seed=0)(_uint8_batch(2, 96))[1].shape == (
        2,
        3,
        96,
        96,
    )


def test_identity_view_at_native_size_is_only_normalization() -> None:
    batch = _uint8_batch(4)
    (view,) = make_views("identity", 32, "cifar100", seed=0)(batch)
    mean, std = DATASET_NORMALIZATION["cifar100"]  # type: ignore[misc]
    expected = (batch.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(view, expected)


def test_identical_images_in_a_batch_get_different_views() -> None:
    image = _cifar_images(1)
    batch = (image if image is not None else _uint8_batch(1)).expand(16, 3, 32, 32).contiguous()
    for recipe in ("simclr", "byol", "isd", "linear_probe"):
        views = make_views(recipe, 32, seed=0)(batch)
        for view in views:
            flat = view.flatten(1)
            distinct = {tuple(row.tolist()) for row in flat}
            assert len(distinct) >= 12, (
                recipe
            )  # 16 samples; a few may coincide (e.g. no crop/flip moves)
        params = make_views(recipe, 32, seed=0).sample_params(batch)[0]
        assert len({tuple(b) for b in params.boxes.tolist()}) > 8


def test_two_views_of_one_batch_differ() -> None:
    first, second = make_views("simclr", 32, seed=0)(_uint8_batch())
    assert not torch.allclose(first, second)


def test_seed_makes_views_reproducible_and_different_seeds_differ() -> None:
    batch = _uint8_batch()
    a = make_views("simclr", 32, seed=3)(batch)
    b = make_views("simclr", 32, seed=3)(batch)
    c = make_views("simclr", 32, seed=4)(batch)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_seed_none_follows_torch_manual_seed() -> None:
    torch.manual_seed(11)
    a = make_views("simclr", 32)
    torch.manual_seed(11)
    b = make_views("simclr", 32)
    assert a.seed == b.seed


def test_resume_from_state_dict_draws_the_same_views(tmp_path: Path) -> None:
    batch = _uint8_batch()
    reference = make_views("byol", 32, seed=5)
    reference(batch)
    expected = reference(batch)  # the second step of an uninterrupted run

    run = make_views("byol", 32, seed=5)
    run(batch)
    torch.save({"augment": run.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)["augment"]
    resumed = make_views("byol", 32, seed=999)  # a fresh process with whatever seed
    resumed.load_state_dict(state)
    assert resumed.seed == 5
    got = resumed(batch)
    assert all(torch.equal(x, y) for x, y in zip(expected, got))


def test_state_dict_before_first_call_and_with_device_argument() -> None:
    augment = make_views("simclr", 32, seed=1, device="cpu")
    assert set(augment.state_dict()["generators"]) == {"cpu"}
    lazy = make_views("simclr", 32, seed=1)
    assert lazy.state_dict()["generators"] == {}
    state = lazy.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = make_views("simclr", 32, seed=2)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    batch = _uint8_batch()
    assert torch.equal(fresh(batch)[0], make_views("simclr", 32, seed=1)(batch)[0])


def test_load_state_dict_rejects_garbage() -> None:
    augment = make_views("simclr", 32, seed=0)
    with pytest.raises(ValueError, match="keys"):
        augment.load_state_dict({"seed": 1})
    with pytest.raises(ValueError, match="seed"):
        augment.load_state_dict({"seed": -1, "generators": {}})
    with pytest.raises(ValueError, match="generators"):
        augment.load_state_dict({"seed": 1, "generators": {"cpu": torch.zeros(3)}})


def test_uint8_and_float_inputs_give_the_same_views() -> None:
    batch = _uint8_batch(16, size=40)
    for recipe, size in (("simclr", 32), ("byol", 64), ("linear_probe", 32), ("identity", 40)):
        from_uint8 = make_views(recipe, size, seed=2)(batch)
        from_float = make_views(recipe, size, seed=2)(batch.float() / 255)
        from_double = make_views(recipe, size, seed=2)(batch.double() / 255)
        for a, b, c in zip(from_uint8, from_float, from_double):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
            torch.testing.assert_close(a, c, atol=1e-5, rtol=0)


def test_result_does_not_depend_on_chunking() -> None:
    batch = _uint8_batch(10)
    recipe = byol(32)[1]
    params = sample_view_params(recipe, 10, 32, 32, torch.Generator().manual_seed(0))
    whole = apply_view(batch, recipe, params, CIFAR_MEAN, CIFAR_STD, chunk_size=10)
    for chunk in (1, 3, None):
        assert torch.equal(
            apply_view(batch, recipe, params, CIFAR_MEAN, CIFAR_STD, chunk_size=chunk), whole
        )


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (32, 85),  # 1 MiB / (3 x 32 x 32 x 4 B) = 85 samples: already >= 32
        (96, 32),  # 1 MiB would be 9 samples: 32 of them, 3.4 MiB, within the 4 MiB cap
        (224, 6),  # 1 MiB would be 1 sample; 32 would be 18 MiB: the 4 MiB cap gives 6
        (1024, 1),  # one sample is over 4 MiB: one a chunk
    ],
)
def test_cpu_chunks_are_about_1_mib_or_up_to_4_mib_to_reach_32_samples(
    size: int, expected: int
) -> None:
    from contrastkit.augment.view import cpu_chunk_size

    assert cpu_chunk_size(3 * size * size) == expected


def test_apply_view_composes_the_ops_in_order() -> None:
    # A view by hand from the same parameters: crop, flip, jitter, grayscale, solarize, normalize.
    from contrastkit.augment import functional as AF

    batch = _uint8_batch(6)
    recipe = ViewRecipe(size=32, gray_p=0.5, solarize_p=0.5)
    params = sample_view_params(recipe, 6, 32, 32, torch.Generator().manual_seed(1))
    x = AF.resized_crop(batch.float() / 255, params.boxes, 32, params.flip)
    x = AF.color_jitter(x, params.factors, params.order, params.jitter)
    x = AF.rgb_to_grayscale(x, params.gray)
    x = AF.solarize(x, params.solarize, 0.5)
    expected = AF.normalize(x, CIFAR_MEAN, CIFAR_STD)
    torch.testing.assert_close(apply_view(batch, recipe, params, CIFAR_MEAN, CIFAR_STD), expected)


def test_input_is_not_modified() -> None:
    batch = _uint8_batch().float() / 255
    copy = batch.clone()
    for recipe in ("simclr", "identity", "linear_probe"):
        make_views(recipe, 32, seed=0)(batch)
    assert torch.equal(batch, copy)


def test_isd_views_are_weak_then_strong() -> None:
    augment = make_views("isd", 32, seed=0)
    weak, strong = augment.views
    assert (weak, strong) == isd(32)
    assert not weak.uses_color and strong.uses_color


def test_without_normalization_views_stay_in_unit_range() -> None:
    augment = MultiViewAugment([simclr(32), linear_probe(32)], seed=0)
    for view in augment(_uint8_batch(32)):
        assert view.min().item() >= 0.0 and view.max().item() <= 1.0


def test_tabular_identity_gives_two_unaliased_copies() -> None:
    features = torch.randn(5, 7)
    augment = make_views("identity", 1, "tabular", seed=0)
    first, second = augment(features)
    assert augment.num_views == 2
    assert torch.equal(first, features) and torch.equal(second, features)
    first.add_(1.0)
    assert torch.equal(second, features)


def test_tabular_gaussian_noise_is_independent_with_the_given_std() -> None:
    features = torch.zeros(1000, 50)
    first, second = make_views("gaussian_noise", 1, "tabular", seed=0, std=0.3)(features)
    assert first.shape == second.shape == (1000, 50)
    for view in (first, second):
        assert view.std().item() == pytest.approx(0.3, rel=0.02)
        assert view.mean().item() == pytest.approx(0.0, abs=4 * 0.3 / math.sqrt(50_000))
    correlation = torch.corrcoef(torch.stack([first.flatten(), second.flatten()]))[0, 1].item()
    assert abs(correlation) < 0.02
    again = make_views("gaussian_noise", 1, "tabular", seed=0, std=0.3)(features)
    assert torch.equal(again[0], first)


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        (torch.zeros(3, 32, 32, dtype=torch.uint8), r"\(N, C, H, W\)"),
        (torch.zeros(2, 1, 32, 32, dtype=torch.uint8), "RGB"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.int64), "dtype"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.bool), "dtype"),
        (torch.zeros(0, 3, 32, 32, dtype=torch.uint8), "empty"),
        (torch.zeros(2, 3, 0, 32), "no pixels"),
    ],
)
def test_bad_image_batches_raise_value_error(batch: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_views("simclr", 32, seed=0)(batch)


def test_not_a_tensor_raises() -> None:
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        make_views("simclr", 32, seed=0)([[0]])  # type: ignore[arg-type]


def test_channel_count_must_match_normalization() -> None:
    augment = MultiViewAugment([identity(8)], mean=(0.5,) * 3, std=(0.5,) * 3, seed=0)
    with pytest.raises(ValueError, match="one entry per channel"):
        augment(torch.zeros(2, 1, 8, 8))


@pytest.mark.parametrize("size", [0, -3, 2.0, True])
def test_bad_size_raises(size: object) -> None:
    with pytest.raises(ValueError, match="size"):
        make_views("simclr", size, seed=0)  # type: ignore[arg-type]


def test_unknown_recipe_and_dataset_list_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown recipe 'moco'.*simclr.*mocov2.*byol.*isd"):
        make_views("moco", 32)
    with pytest.raises(
        ValueError, match=r"unknown dataset 'stl10'.*cifar10.*cifar100.*imagenet.*tabular"
    ):
        make_views("simclr", 32, "stl10")
    with pytest.raises(
        ValueError, match=r"unknown recipe 'simclr' for dataset 'tabular'.*identity.*gaussian_noise"
    ):
        make_views("simclr", 32, "tabular")
    with pytest.raises(ValueError, match=r"unknown recipe 'gaussian_noise' for dataset 'cifar10'"):
        make_views("gaussian_noise", 32)


def test_bad_overrides_and_tabular_inputs() -> None:
    with pytest.raises(ValueError, match="gray_p"):
        make_views("simclr", 32, gray_p=3.0)
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['gray_p'\]"):
        make_views("gaussian_noise", 1, "tabular", gray_p=0.1)
    augment = make_views("gaussian_noise", 1, "tabular", seed=0)
    with pytest.raises(ValueError, match="floating point"):
        augment(torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="non-empty"):
        augment(torch.zeros(0, 3))
    with pytest.raises(ValueError, match="non-empty"):
        augment(torch.zeros(5))


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="at least one"):
        MultiViewAugment([])
    with pytest.raises(ValueError, match="all ViewRecipe or all NoiseRecipe"):
        MultiViewAugment([simclr(32), make_views("identity", 1, "tabular").views[0]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="together"):
        MultiViewAugment([simclr(32)], mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="std must be > 0"):
        MultiViewAugment([simclr(32)], mean=(0.5,) * 3, std=(0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="seed"):
        MultiViewAugment([simclr(32)], seed=-1)
