"""make_views: the one entry point the pipelines use, from a recipe name and a dataset name.

It maps the name to its recipe function (one recipe per view) and the dataset to its
normalization constants; the 0.1 names still work, with a DeprecationWarning, until 0.3.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import torch

from contrastkit.augment import recipes as R
from contrastkit.augment.multicrop import dino_views, swav_views
from contrastkit.augment.multiview import MultiViewAugment
from contrastkit.augment.normalization import DATASETS, dataset_normalization
from contrastkit.augment.recipes import NoiseRecipe, ViewRecipe

# Recipe name -> its recipe function, (size, **overrides) -> one recipe per view. Contrastive
# recipes give 2 views, the evaluation recipes 1. isd_views gives (weak teacher, strong student);
# the multi-crop recipes give 2 global views, then num_local local views (10 for DINO, 8 for SwAV).
IMAGE_RECIPES: MappingProxyType[str, Callable[..., tuple[ViewRecipe, ...]]] = MappingProxyType(
    {
        "simclr_views": R.simclr_views,
        "mocov2_views": R.mocov2_views,
        "byol_views": R.byol_views,
        "isd_views": R.isd_views,
        "probe_views": R.probe_views,
        "identity_views": R.identity_views,
        "dino_views": dino_views,
        "swav_views": swav_views,
    }
)

# Tabular/generic recipes give 2 views of the (N, F) batch, so a contrastive pipeline runs
# unchanged; the identity is noise of std 0, i.e. two exact copies.
TABULAR_RECIPES: MappingProxyType[str, Callable[..., tuple[NoiseRecipe, ...]]] = MappingProxyType(
    {
        "identity_views": lambda: R.gaussian_noise_views(std=0.0),
        "gaussian_noise_views": R.gaussian_noise_views,
        "input_dropout_views": R.input_dropout_views,
    }
)
TABULAR_FIELDS: MappingProxyType[str, frozenset[str]] = MappingProxyType(
    {
        "identity_views": frozenset(),
        "gaussian_noise_views": frozenset({"std"}),
        "input_dropout_views": frozenset({"p", "columns"}),
    }
)

# The 0.1 make_views names -> their 0.2 names. They are not keys of IMAGE_RECIPES /
# TABULAR_RECIPES, which list only the names to write from now on; make_views accepts them with
# a DeprecationWarning until 0.3. "cifar_eval" took the size like "linear_probe", so both map to
# probe_views and give the same views as before.
RENAMED_RECIPES: MappingProxyType[str, str] = MappingProxyType(
    {
        "simclr": "simclr_views",
        "mocov2": "mocov2_views",
        "byol": "byol_views",
        "isd": "isd_views",
        "linear_probe": "probe_views",
        "cifar_eval": "probe_views",
        "identity": "identity_views",
        "gaussian_noise": "gaussian_noise_views",
    }
)


def _unknown_recipe(recipe: str, dataset: str) -> ValueError:
    """The error for a recipe name ``dataset`` has not, with the close matches among its recipes."""
    valid = TABULAR_RECIPES if dataset == "tabular" else IMAGE_RECIPES
    # Old spellings count as matches too, suggested by their new name: 'moco' -> 'mocov2_views'.
    spellings = {name: name for name in valid}
    spellings.update({old: new for old, new in RENAMED_RECIPES.items() if new in valid})
    matches = difflib.get_close_matches(recipe, list(spellings), n=3, cutoff=0.6)
    close = dict.fromkeys(spellings[m] for m in matches)
    message = f"unknown recipe {recipe!r} for dataset {dataset!r}; valid recipes: {list(valid)}"
    # A recipe of the other data kind is named as such before any fuzzy match:
    # 'gaussian_noise_views' on images is not a misspelt 'dino_views'.
    if RENAMED_RECIPES.get(recipe, recipe) in IMAGE_RECIPES:
        message += "; that is a recipe for image datasets"
    elif RENAMED_RECIPES.get(recipe, recipe) in TABULAR_RECIPES:
        message += "; that is a recipe for dataset 'tabular'"
    elif close:
        message += f"; did you mean {' or '.join(map(repr, close))}?"
    return ValueError(message)


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
        recipe: image datasets: ``simclr_views``, ``mocov2_views``, ``byol_views``,
            ``isd_views`` (2 views each; isd gives [weak teacher view, strong student view]),
            ``probe_views`` (1 view: padded crop + flip), ``identity_views`` (1 view: resize to
            ``size`` if needed + normalize), ``dino_views`` / ``swav_views`` (multi-crop: 2 global
            views of ``size`` px, then ``num_local`` local views, 8 / 6 by default). ``tabular``: ``identity_views`` (2 copies of the
            input), ``gaussian_noise_views`` (2 noisy views), ``input_dropout_views`` (2 views with input dropout). The 0.1 names (``RENAMED_RECIPES``)
            still work and warn with a DeprecationWarning.
        size: output side in px for images (>= 1); not used for ``tabular`` (features keep their shape).
        dataset: ``cifar10``, ``cifar100``, ``imagenet`` (their normalization constants) or ``tabular``.
        seed: seeds the augmentation generators; None = drawn from torch's global generator.
        device: create that device's generator now (optional).
        **overrides: recipe fields to change in every view, e.g. ``gray_p=0.0`` or, for
            ``gaussian_noise_views``, ``std=0.05``; the image recipes also take
            ``blur_min_size``, and the multi-crop ones ``num_local``, ``local_size``,
            ``global_scale`` and ``local_scale`` (``data.augment_options`` in the pipelines).

    Returns:
        A MultiViewAugment; ``make_views(...)(batch)`` is a list of ``num_views`` tensors.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {list(DATASETS)}")
    if not isinstance(recipe, str):
        raise ValueError(f"recipe must be a recipe name (str), got {type(recipe).__name__}")
    tabular = dataset == "tabular"
    name = RENAMED_RECIPES.get(recipe, recipe)
    if name not in (TABULAR_RECIPES if tabular else IMAGE_RECIPES):
        raise _unknown_recipe(recipe, dataset)
    if name != recipe:
        warnings.warn(
            f"make_views recipe {recipe!r} is deprecated since contrastkit-augment 0.2 and will be "
            f"removed in 0.3; use {name!r}",
            DeprecationWarning,
            stacklevel=2,
        )
    if tabular:
        allowed = sorted(TABULAR_FIELDS[name])
        unknown = sorted(set(overrides) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown field(s) {unknown} for tabular recipe {name!r}; valid: {allowed}"
            )
        return MultiViewAugment(TABULAR_RECIPES[name](**overrides), seed=seed, device=device)
    stats = dataset_normalization(dataset)
    if stats is None:
        raise ValueError(f"dataset {dataset!r} has no normalization constants for images")
    mean, std = stats
    return MultiViewAugment(
        IMAGE_RECIPES[name](size, **overrides), mean=mean, std=std, seed=seed, device=device
    )
