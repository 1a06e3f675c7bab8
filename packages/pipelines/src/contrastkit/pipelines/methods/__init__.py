"""The pretrain methods, one small module each, and the name -> class table the pipeline reads.

Adding a method: a PretrainMethod subclass in its own module, one entry in METHODS, its name in
config.METHOD_NAMES.
"""

from __future__ import annotations

from torch import nn

from contrastkit.pipelines.config import PretrainConfig
from contrastkit.pipelines.methods.base import Encoder, MethodOutput, PretrainMethod
from contrastkit.pipelines.methods.byol import BYOL
from contrastkit.pipelines.methods.isd import ISD
from contrastkit.pipelines.methods.moco import MoCo
from contrastkit.pipelines.methods.npair import NPair
from contrastkit.pipelines.methods.simclr import SimCLR

METHODS: dict[str, type[PretrainMethod]] = {
    "simclr": SimCLR,
    "npair": NPair,
    "moco": MoCo,
    "byol": BYOL,
    "isd": ISD,
}


def build_method(config: PretrainConfig, backbone: nn.Module) -> PretrainMethod:
    """The method `config.method.name` around `backbone` (which must expose `num_features`)."""
    name = config.method.name
    if name not in METHODS:
        raise ValueError(f"method.name must be one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name](backbone, config)


__all__ = [
    "BYOL",
    "ISD",
    "METHODS",
    "Encoder",
    "MethodOutput",
    "MoCo",
    "NPair",
    "PretrainMethod",
    "SimCLR",
    "build_method",
]
