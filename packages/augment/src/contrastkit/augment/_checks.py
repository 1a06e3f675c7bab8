"""Input checks shared by the batched image ops of color.py, blur.py and geometry.py.

Each op validates its own arguments here, so a wrong shape fails with a message naming the argument.
"""

from __future__ import annotations

from torch import Tensor


def check_images(images: object, rgb: bool = False, floating: bool = True) -> None:
    """Raise ValueError unless ``images`` is (N, C, H, W), float if ``floating``, RGB if ``rgb``."""
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be an (N, C, H, W) tensor, got {shape}")
    if floating and not images.is_floating_point():
        raise ValueError(
            f"images must be floating point on the [0, 1] scale, got dtype {images.dtype}"
        )
    if rgb and images.shape[1] != 3:
        raise ValueError(f"images must be RGB (C = 3), got shape {tuple(images.shape)}")


def check_per_sample(name: str, value: object, n: int, trailing: tuple[int, ...] = ()) -> None:
    """Raise ValueError unless ``value`` has shape (n, *trailing): one entry per sample."""
    expected = (n, *trailing)
    if not isinstance(value, Tensor) or tuple(value.shape) != expected:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must have shape {expected} (one entry per sample), got {shape}")
