"""make_views: the one entry point the pipelines use, from a recipe name and a dataset name.

It maps the name to its preset recipes and the dataset to its normalization constants.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import torch

from contrastkit.augment import recipes as R
from contrastkit.augment.multiview import MultiViewAugment
from contrastkit.augment.normalization import DATASETS, dataset_normalization
from contrastkit.augment.recipes import NoiseRecipe, ViewRecipe

# Recipe name -> the recipes of its views. Contrastive recipes give 2 views; the evaluation
# recipes give 1. For isd, views[0] is the weak (teacher) view and views[1] the strong (student) one.
IMAGE_RECIPES: MappingProxyType[str, Callable[..., list[ViewRecipe]]] = MappingProxyType(
    {
        "simclr": lambda size, **kw: [R.simclr(size, **kw), R.simclr(size, **kw)],
        "mocov2": lambda size, **kw: [R.mocov2(size, **kw), R.mocov2(size, **kw)],
        "byol": lambda size, **kw: list(R.byol(size, **kw)),
        "isd": lambda size, **kw: list(R.isd(size, **kw)),
        "cifar_eval": lambda size, **kw: [R.linear_probe(size, **kw)],
        "linear_probe": lambda size, **kw: [R.linear_probe(size, **kw)],
        "identity": lambda size, **kw: [R.identity(size, **kw)],
    }
)

# Tabular/generic recipes give 2 views of the (N, F) batch, so a contrastive pipeline runs unchanged.
TABULAR_RECIPES: MappingProxyType[str, Callable[..., list[NoiseRecipe]]] = MappingProxyType(
    {
        "identity": lambda: [NoiseRecipe(), NoiseRecipe()],
        "gaussian_noise": lambda **kw: [R.gaussian_noise(**kw), R.gaussian_noise(**kw)],
    }
)
TABULAR_FIELDS: MappingProxyType[str, frozenset[str]] = MappingProxyType(
    {"identity": frozenset(), "gaussian_noise": frozenset({"std"})}
)


def make_views(
    recipe: str,
    size: int,
    dataset: str = "cifar10",
    seed: int | None = None,
    *,
    device: torch.device | str | None = None,
    **overrides: Any,
) -> MultiViewAugment:
    """Build the view generator of a named recipe for a dataset.

    Args:
        recipe: image datasets: ``simclr``, ``mocov2``, ``byol``, ``isd`` (2 views each; isd gives
            [weak teacher view, strong student view]), ``linear_probe`` / ``cifar_eval`` (1 view:
            padded crop + flip), ``identity`` (1 view: resize to ``size`` if needed + normalize).
            ``tabular``: ``identity`` (2 copies of the input), ``gaussian_noise`` (2 noisy views).
        size: output side in px for images (>= 1); not used for ``tabular`` (features keep their shape).
        dataset: ``cifar10``, ``cifar100``, ``imagenet`` (their normalization constants) or ``tabular``.
        seed: seeds the augmentation generators; None = drawn from torch's global generator.
        device: create that device's generator now (optional).
        **overrides: recipe fields to change in every view, e.g. ``gray_p=0.0`` or, for
            ``gaussian_noise``, ``std=0.05``.

    Returns:
        A MultiViewAugment; ``make_views(...)(batch)`` is a list of ``num_views`` tensors.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {list(DATASETS)}")
    if dataset == "tabular":
        if recipe not in TABULAR_RECIPES:
            raise ValueError(
                f"unknown recipe {recipe!r} for dataset 'tabular'; valid recipes: {list(TABULAR_RECIPES)}"
            )
        allowed = sorted(TABULAR_FIELDS[recipe])
        unknown = sorted(set(overrides) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown field(s) {unknown} for tabular recipe {recipe!r}; valid: {allowed}"
            )
        return MultiViewAugment(TABULAR_RECIPES[recipe](**overrides), seed=seed, device=device)
    if recipe not in IMAGE_RECIPES:
        raise ValueError(
            f"unknown recipe {recipe!r} for dataset {dataset!r}; valid recipes: {list(IMAGE_RECIPES)}"
        )
    stats = dataset_normalization(dataset)
    if stats is None:
        raise ValueError(f"dataset {dataset!r} has no normalization constants for images")
    mean, std = stats
    return MultiViewAugment(
        IMAGE_RECIPES[recipe](size, **overrides), mean=mean, std=std, seed=seed, device=device
    )
