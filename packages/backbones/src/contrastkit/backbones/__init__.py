"""contrastkit.backbones: Encoders for self-supervised learning: MyResNet, CIFAR ResNets, any timm model, projection and prediction heads."""

from contrastkit.backbones._version import __version__

__all__ = ["__version__"]
