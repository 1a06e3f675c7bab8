"""View recipes: the per-view augmentation settings of SimCLR, MoCo v2, BYOL, ISD and linear probing.

A recipe is a frozen, validated dataclass. The ``*_views`` functions return the published presets
as a tuple with one recipe per view; the 0.1 names at the end are deprecated aliases.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

CropMode = Literal["resized", "padded", "none"]
CROP_MODES: tuple[str, ...] = ("resized", "padded", "none")

# The recipes blur only from 64 px up by default. SimCLR's own CIFAR-10 run does not blur
# (google-research/simclr README: `--use_blur=False`), nor do i-Mix's CIFAR views. solo-learn's
# CIFAR recipes do blur 32 px crops (augmentations/symmetric.yaml: p 0.5, PIL radius sigma in
# [0.1, 2]): pass `blur_min_size=0` to keep a recipe's blur probabilities at every size, with a
# `blur_kernel_size` wide enough for sigma (13 taps hold +-3 sigma at sigma = 2; the default kernel,
# 10% of the side, is only 3 taps at 32 px, too short to reach sigma = 2).
BLUR_MIN_SIZE = 64


def default_blur_kernel_size(size: int) -> int:
    """Blur kernel side for an output of ``size`` px: 10% of the size, made odd (SimCLR/BYOL: 224 -> 23)."""
    return int(0.1 * size) // 2 * 2 + 1


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def _as_float_pair(name: str, value: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of numbers (low, high), got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"{name} must be a finite pair with low <= high, got {value!r}")
    return low, high


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ViewRecipe:
    """How one view of an RGB image batch is drawn; defaults are SimCLR's CIFAR view.

    The ops run in this order, each sample drawing its own parameters:
    crop (+ flip) -> color jitter (random op order) -> grayscale -> Gaussian blur -> solarize.

    Fields:
        size: output side in px; every view is (N, C, size, size).
        crop: ``"resized"`` = RandomResizedCrop(size, crop_scale, crop_ratio), bilinear;
            ``"padded"`` = RandomCrop(size) of the image zero-padded by ``crop_padding`` px
            (the CIFAR linear-probe crop); ``"none"`` = the whole image, resized to ``size`` if needed.
        crop_scale: (low, high) fraction of the image area a resized crop covers, 0 < low <= high <= 1.
        crop_ratio: (low, high) aspect ratio width/height of a resized crop, drawn log-uniformly.
        crop_padding: zero padding in px on each side for ``crop="padded"``.
        flip_p: probability of a horizontal flip.
        brightness, contrast, saturation: jitter strengths s >= 0; the factor is uniform in
            [max(0, 1 - s), 1 + s] (torchvision's ColorJitter convention).
        hue: jitter strength in [0, 0.5]; the hue shift is uniform in [-hue, hue] turns of the HSV circle.
        jitter_p: probability that a sample is color-jittered at all.
        gray_p: probability of converting a sample to 3-channel grayscale (ITU-R 601-2 luma).
        blur_p: probability of a Gaussian blur.
        blur_sigma: (low, high) range of the blur's standard deviation in px, 0 < low.
        blur_kernel_size: odd kernel side in px; None -> ``default_blur_kernel_size(size)``.
        solarize_p: probability of solarizing (x -> 1 - x where x >= solarize_threshold).
        solarize_threshold: threshold on the [0, 1] intensity scale.
    """

    size: int
    crop: CropMode = "resized"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    crop_padding: int = 4
    flip_p: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_size: int | None = None
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5

    def __post_init__(self) -> None:
        if not _is_int(self.size) or self.size < 1:
            raise ValueError(f"size must be an int >= 1, got {self.size!r}")
        if self.crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {CROP_MODES}, got {self.crop!r}")
        # YAML and CLI hand over lists; store tuples so the recipe stays hashable and frozen.
        scale = _as_float_pair("crop_scale", self.crop_scale)
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(
                f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale!r}"
            )
        ratio = _as_float_pair("crop_ratio", self.crop_ratio)
        if not ratio[0] > 0.0:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {self.crop_ratio!r}")
        sigma = _as_float_pair("blur_sigma", self.blur_sigma)
        if not sigma[0] > 0.0:
            raise ValueError(f"blur_sigma must satisfy 0 < low <= high, got {self.blur_sigma!r}")
        object.__setattr__(self, "crop_scale", scale)
        object.__setattr__(self, "crop_ratio", ratio)
        object.__setattr__(self, "blur_sigma", sigma)
        if not _is_int(self.crop_padding) or self.crop_padding < 0:
            raise ValueError(f"crop_padding must be an int >= 0, got {self.crop_padding!r}")
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
            _check_probability(name, getattr(self, name))
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.hue, (int, float)) and 0.0 <= self.hue <= 0.5):
            raise ValueError(f"hue must be in [0, 0.5] (turns of the hue circle), got {self.hue!r}")
        kernel = self.blur_kernel_size
        if kernel is not None and (not _is_int(kernel) or kernel < 1 or kernel % 2 == 0):
            raise ValueError(f"blur_kernel_size must be None or an odd int >= 1, got {kernel!r}")
        if not (
            isinstance(self.solarize_threshold, (int, float))
            and 0.0 <= self.solarize_threshold <= 1.0
        ):
            raise ValueError(
                f"solarize_threshold must be in [0, 1], got {self.solarize_threshold!r}"
            )

    @property
    def kernel_size(self) -> int:
        """The blur kernel side actually used, in px."""
        if self.blur_kernel_size is not None:
            return self.blur_kernel_size
        return default_blur_kernel_size(self.size)

    @property
    def uses_jitter(self) -> bool:
        strengths = (self.brightness, self.contrast, self.saturation, self.hue)
        return self.jitter_p > 0.0 and any(s > 0.0 for s in strengths)

    @property
    def uses_color(self) -> bool:
        """Whether any op needs RGB input (jitter, grayscale)."""
        return self.uses_jitter or self.gray_p > 0.0


@dataclass(frozen=True)
class NoiseRecipe:
    """One view of a tabular or generic float batch (N, F, ...): x + std * standard normal noise,
    then input dropout: each of the first ``drop_columns`` features (all with None) of each
    sample set to 0 with probability ``drop_p``, without rescaling the others.

    ``std = 0`` and ``drop_p = 0`` is the identity view (i-Mix's domain-agnostic setting for
    i-Mix itself). ``std`` is in the units of the input features; the preset 0.1 assumes
    standardized features. The dropout is i-Mix's ``--inputdrop`` (kibok90/imix main_pretext.py
    `train`: `x[:, :ch] * (rand > p)` on the first in_channels[0] columns, 10 for CovType's
    continuous ones), the only augmentation of its tabular baselines.
    """

    std: float = 0.0
    drop_p: float = 0.0
    drop_columns: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.std, (int, float)) and math.isfinite(self.std) and self.std >= 0.0):
            raise ValueError(f"std must be a finite number >= 0, got {self.std!r}")
        _check_probability("drop_p", self.drop_p)
        columns = self.drop_columns
        if columns is not None and (not _is_int(columns) or columns < 1):
            raise ValueError(
                f"drop_columns must be None (every feature) or an int >= 1, got {columns!r}"
            )


def _with_overrides(recipe: ViewRecipe, overrides: dict[str, Any]) -> ViewRecipe:
    fields = {f.name for f in dataclasses.fields(ViewRecipe)} - {"size"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown ViewRecipe field(s) {unknown}; valid fields: {sorted(fields)}")
    return dataclasses.replace(recipe, **overrides)


def _blur_p(size: int, p: float, blur_min_size: int) -> float:
    """The recipe's blur probability ``p`` at ``size`` px: p from ``blur_min_size`` px up, else 0."""
    if not _is_int(blur_min_size) or blur_min_size < 0:
        raise ValueError(
            f"blur_min_size must be an int >= 0 (0: blur at every size), got {blur_min_size!r}"
        )
    return p if size >= blur_min_size else 0.0


def simclr_views(
    size: int, *, blur_min_size: int = BLUR_MIN_SIZE, **overrides: Any
) -> tuple[ViewRecipe, ViewRecipe]:
    """SimCLR's two views, one recipe for both: crop scale 0.08-1, flip 0.5,
    jitter (0.4, 0.4, 0.4, 0.1) p=0.8, gray 0.2, blur 0.5 at >= ``blur_min_size`` px (64).

    ``overrides`` change fields in both views.
    """
    recipe = ViewRecipe(size=size, blur_p=_blur_p(size, 0.5, blur_min_size))
    view = _with_overrides(recipe, overrides)
    return view, view


def mocov2_views(
    size: int, *, blur_min_size: int = BLUR_MIN_SIZE, **overrides: Any
) -> tuple[ViewRecipe, ViewRecipe]:
    """MoCo v2's two views, one recipe for both: as SimCLR with crop scale 0.2-1
    (blur 0.5 at >= ``blur_min_size`` px, 64 by default).

    ``overrides`` change fields in both views.
    """
    recipe = ViewRecipe(size=size, crop_scale=(0.2, 1.0), blur_p=_blur_p(size, 0.5, blur_min_size))
    view = _with_overrides(recipe, overrides)
    return view, view


def byol_views(
    size: int, *, blur_min_size: int = BLUR_MIN_SIZE, **overrides: Any
) -> tuple[ViewRecipe, ViewRecipe]:
    """BYOL's asymmetric pair: jitter (0.4, 0.4, 0.2, 0.1) p=0.8, gray 0.2, then
    view 1 blur p=1.0, no solarize; view 2 blur p=0.1, solarize p=0.2 (blur only at
    >= ``blur_min_size`` px, 64 by default).

    ``overrides`` apply to both views.
    """
    common = {"saturation": 0.2}
    first_blur, second_blur = (_blur_p(size, p, blur_min_size) for p in (1.0, 0.1))
    first = ViewRecipe(size=size, blur_p=first_blur, solarize_p=0.0, **common)
    second = ViewRecipe(size=size, blur_p=second_blur, solarize_p=0.2, **common)
    return _with_overrides(first, overrides), _with_overrides(second, overrides)


def isd_views(
    size: int, *, blur_min_size: int = BLUR_MIN_SIZE, **overrides: Any
) -> tuple[ViewRecipe, ViewRecipe]:
    """ISD's (weak, strong) pair: weak = crop scale 0.2-1 + flip, for the teacher;
    strong = the MoCo v2 view (blur 0.5 at >= ``blur_min_size`` px), for the student
    (UMBCvision/ISD ``aug_weak`` / ``aug_strong``).

    ``overrides`` apply to both views.
    """
    weak = ViewRecipe(
        size=size, crop_scale=(0.2, 1.0), jitter_p=0.0, gray_p=0.0, blur_p=0.0, solarize_p=0.0
    )
    strong = mocov2_views(size, blur_min_size=blur_min_size, **overrides)[0]
    return _with_overrides(weak, overrides), strong


def probe_views(size: int, **overrides: Any) -> tuple[ViewRecipe]:
    """The one linear-probe training view: RandomCrop(size) of the image zero-padded by 4 px,
    flip 0.5, no color. ``probe_views(32)`` is the standard CIFAR linear-probe augmentation.
    """
    recipe = ViewRecipe(
        size=size,
        crop="padded",
        crop_padding=4,
        jitter_p=0.0,
        gray_p=0.0,
        blur_p=0.0,
        solarize_p=0.0,
    )
    return (_with_overrides(recipe, overrides),)


def identity_views(size: int, **overrides: Any) -> tuple[ViewRecipe]:
    """One view without augmentation: the whole image, resized to ``size`` only if it is not
    size x size already."""
    recipe = ViewRecipe(
        size=size, crop="none", flip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0, solarize_p=0.0
    )
    return (_with_overrides(recipe, overrides),)


def input_dropout_views(
    p: float = 0.2, columns: int | None = None
) -> tuple[NoiseRecipe, NoiseRecipe]:
    """Two tabular views, each the input with every one of its first ``columns`` features (all
    with None) zeroed with probability ``p``, independently per view and sample, unscaled:
    i-Mix's ``--inputdrop 0.2`` on CovType's 10 continuous columns is ``p=0.2, columns=10``."""
    view = NoiseRecipe(drop_p=p, drop_columns=columns)
    return view, view


def gaussian_noise_views(std: float = 0.1) -> tuple[NoiseRecipe, NoiseRecipe]:
    """Two tabular/generic views, each the input plus independent Gaussian noise of standard
    deviation ``std`` (feature units); ``std=0`` gives two exact copies."""
    view = NoiseRecipe(std=std)
    return view, view


# ----------------------------------------------------------------------------------------------
# Deprecated 0.1 names, kept for one minor version (removed in 0.3). Each returns exactly what it
# returned in 0.1: one recipe, or a pair for byol and isd.


def _warn_renamed(old: str, new: str) -> None:
    warnings.warn(
        f"contrastkit.augment.{old} is deprecated since 0.2 and will be removed in 0.3; use {new} "
        "(recipe functions now return a tuple with one recipe per view)",
        DeprecationWarning,
        stacklevel=3,  # the caller of the deprecated function
    )


def simclr(size: int, **overrides: Any) -> ViewRecipe:
    """Deprecated: ``simclr_views(size, **overrides)[0]``."""
    _warn_renamed("simclr(size)", "simclr_views(size)[0]")
    return simclr_views(size, **overrides)[0]


def mocov2(size: int, **overrides: Any) -> ViewRecipe:
    """Deprecated: ``mocov2_views(size, **overrides)[0]``."""
    _warn_renamed("mocov2(size)", "mocov2_views(size)[0]")
    return mocov2_views(size, **overrides)[0]


def byol(size: int, **overrides: Any) -> tuple[ViewRecipe, ViewRecipe]:
    """Deprecated: ``byol_views(size, **overrides)``."""
    _warn_renamed("byol(size)", "byol_views(size)")
    return byol_views(size, **overrides)


def isd(size: int, **overrides: Any) -> tuple[ViewRecipe, ViewRecipe]:
    """Deprecated: ``isd_views(size, **overrides)``."""
    _warn_renamed("isd(size)", "isd_views(size)")
    return isd_views(size, **overrides)


def linear_probe(size: int, **overrides: Any) -> ViewRecipe:
    """Deprecated: ``probe_views(size, **overrides)[0]``."""
    _warn_renamed("linear_probe(size)", "probe_views(size)[0]")
    return probe_views(size, **overrides)[0]


def cifar_eval(**overrides: Any) -> ViewRecipe:
    """Deprecated: ``probe_views(32, **overrides)[0]``."""
    _warn_renamed("cifar_eval()", "probe_views(32)[0]")
    return probe_views(32, **overrides)[0]


def identity(size: int, **overrides: Any) -> ViewRecipe:
    """Deprecated: ``identity_views(size, **overrides)[0]``."""
    _warn_renamed("identity(size)", "identity_views(size)[0]")
    return identity_views(size, **overrides)[0]


def gaussian_noise(std: float = 0.1) -> NoiseRecipe:
    """Deprecated: ``gaussian_noise_views(std)[0]``."""
    _warn_renamed("gaussian_noise(std)", "gaussian_noise_views(std)[0]")
    return gaussian_noise_views(std)[0]
