"""All batched image ops in one namespace: ``from contrastkit.augment import functional as AF``.

The ops live in one module per family, as kornia splits enhance / filters / geometry:
color.py (jitter, grayscale, solarize, normalize), blur.py (Gaussian blur) and geometry.py
(crops, resize, flips). This module only re-exports them.
"""

from contrastkit.augment.blur import gaussian_blur
from contrastkit.augment.color import (
    BRIGHTNESS,
    CONTRAST,
    HUE,
    LUMA_WEIGHTS,
    SATURATION,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    normalize,
    rgb_to_grayscale,
    solarize,
)
from contrastkit.augment.geometry import horizontal_flip, padded_crop, resized_crop

__all__ = [
    "BRIGHTNESS",
    "CONTRAST",
    "HUE",
    "LUMA_WEIGHTS",
    "SATURATION",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "color_jitter",
    "gaussian_blur",
    "horizontal_flip",
    "normalize",
    "padded_crop",
    "resized_crop",
    "rgb_to_grayscale",
    "solarize",
]
