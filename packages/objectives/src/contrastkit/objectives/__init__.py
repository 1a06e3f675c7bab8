"""contrastkit.objectives: Contrastive and self-distillation objectives (SimCLR, N-pair, MoCo, ISD, BYOL, i-Mix) as pure PyTorch functions."""

from contrastkit.objectives._version import __version__

__all__ = ["__version__"]
