"""contrastkit.augment: batched on-device multi-view augmentation for self-supervised learning.

``make_views("simclr_views", 32, seed=0)(uint8_batch)`` gives two views with per-sample random
crops, flips and colors, drawn and computed on the batch's own device; ``dino_views`` and
``swav_views`` give multi-crop views (2 global + N local crops, one batched call per resolution). The 0.1 recipe names
(``simclr``, ``mocov2``, ``byol``, ``isd``, ``linear_probe``, ``cifar_eval``, ``identity``,
``gaussian_noise``) still work as deprecated aliases until 0.3.
"""

from contrastkit.augment import functional
from contrastkit.augment._version import __version__
from contrastkit.augment.factory import (
    IMAGE_RECIPES,
    RENAMED_RECIPES,
    TABULAR_RECIPES,
    make_views,
)
from contrastkit.augment.multicrop import default_local_size, dino_views, swav_views
from contrastkit.augment.multiview import MultiViewAugment, group_views
from contrastkit.augment.normalization import DATASET_NORMALIZATION, dataset_normalization
from contrastkit.augment.params import ViewParams, sample_view_params
from contrastkit.augment.recipes import (
    NoiseRecipe,
    ViewRecipe,
    byol,
    byol_views,
    cifar_eval,
    default_blur_kernel_size,
    gaussian_noise,
    gaussian_noise_views,
    identity,
    identity_views,
    input_dropout_views,
    isd,
    isd_views,
    linear_probe,
    mocov2,
    mocov2_views,
    probe_views,
    simclr,
    simclr_views,
)
from contrastkit.augment.view import apply_view

__all__ = [
    "DATASET_NORMALIZATION",
    "IMAGE_RECIPES",
    "RENAMED_RECIPES",
    "TABULAR_RECIPES",
    "MultiViewAugment",
    "NoiseRecipe",
    "ViewParams",
    "ViewRecipe",
    "__version__",
    "apply_view",
    "byol",
    "byol_views",
    "cifar_eval",
    "dataset_normalization",
    "default_blur_kernel_size",
    "default_local_size",
    "dino_views",
    "functional",
    "gaussian_noise",
    "gaussian_noise_views",
    "group_views",
    "identity",
    "identity_views",
    "input_dropout_views",
    "isd",
    "isd_views",
    "linear_probe",
    "make_views",
    "mocov2",
    "mocov2_views",
    "probe_views",
    "sample_view_params",
    "simclr",
    "simclr_views",
    "swav_views",
]
