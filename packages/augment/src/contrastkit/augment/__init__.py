"""contrastkit.augment: Batched on-device multi-view augmentation for self-supervised learning, built on kornia."""

from contrastkit.augment._version import __version__

__all__ = ["__version__"]
