"""Argument checks shared by the backbone and head constructors.

Each raises ValueError naming the argument, the value it got and what is allowed.
"""

from __future__ import annotations

import torch


def check_positive_int(name: str, value: object) -> int:
    """Return `value` if it is an int > 0 (bools rejected), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return `value` if it is a bool, else raise ValueError (catches `"false"` from configs)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


def check_features_input(x: torch.Tensor, in_features: int, who: str) -> None:
    """Raise ValueError unless `x` is a (N, in_features) tensor."""
    if x.ndim != 2 or x.shape[1] != in_features:
        raise ValueError(f"{who} expects input of shape (N, {in_features}), got {tuple(x.shape)}")


def check_image_input(x: torch.Tensor, in_channels: int, who: str) -> None:
    """Raise ValueError unless `x` is a (N, in_channels, H, W) tensor."""
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(
            f"{who} expects images of shape (N, {in_channels}, H, W), got {tuple(x.shape)}"
        )
