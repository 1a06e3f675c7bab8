"""contrastkit.pipelines: Pretrain, probe and joint training pipelines on accelerate for contrastkit."""

from contrastkit.pipelines._version import __version__

__all__ = ["__version__"]
