"""The pretrain methods, one small module each, and the registry the pipeline and the config read.

Adding a method is one new module in this package (a PretrainMethod subclass that declares its
`name` and defaults as class attributes) plus a config: METHODS is built from the classes found
in the package's modules.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from typing import TYPE_CHECKING

from torch import nn

from contrastkit.pipelines.methods.base import Encoder, MethodOutput, PretrainMethod
from contrastkit.pipelines.methods.byol import BYOL
from contrastkit.pipelines.methods.isd import ISD
from contrastkit.pipelines.methods.moco import MoCo
from contrastkit.pipelines.methods.npair import NPair
from contrastkit.pipelines.methods.simclr import SimCLR

if TYPE_CHECKING:
    from contrastkit.pipelines.config import PretrainConfig


def _find_methods() -> dict[str, type[PretrainMethod]]:
    """name -> class of every PretrainMethod subclass with a `name` defined in this package's
    modules, sorted by name (the order error messages list them in)."""
    found: dict[str, type[PretrainMethod]] = {}
    for module_info in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            defined_here = isinstance(value, type) and value.__module__ == module.__name__
            if not (defined_here and issubclass(value, PretrainMethod) and value.name):
                continue
            if value.name in found:
                raise TypeError(
                    f"two methods are named {value.name!r}: {found[value.name].__qualname__} and "
                    f"{value.__qualname__} in {module.__name__}"
                )
            if not value.default_augment:
                raise TypeError(f"method {value.name!r} declares no default_augment recipe")
            found[value.name] = value
    return dict(sorted(found.items()))


METHODS: dict[str, type[PretrainMethod]] = _find_methods()


def method_class(name: str) -> type[PretrainMethod]:
    """The method class registered as `name` (ValueError listing the valid names otherwise)."""
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"method.name must be one of {list(METHODS)}, got {name!r}{hint}")
    return METHODS[name]


def build_method(config: PretrainConfig, backbone: nn.Module) -> PretrainMethod:
    """The method `config.method.name` around `backbone` (which must expose `num_features`),
    given the sections it reads and the run's seed."""
    method = method_class(config.method.name)
    return method(backbone, config.method, config.model, seed=config.train.seed)


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
    "method_class",
]
