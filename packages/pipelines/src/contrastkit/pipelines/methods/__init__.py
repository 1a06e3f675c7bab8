"""The pretrain methods, one small module each, and the registry the pipeline and the config read.

Adding a method is one new module in this package, named as the method (`moco.py` holds the
method named "moco": a PretrainMethod subclass that declares its `name` and defaults as class
attributes), plus a config. METHODS is built from the classes found in those modules.

Importing this package loads no torch: `method_names()` reads the module names, so the command
line checks `method.name` before the heavy imports. METHODS, the classes and `build_method`
import the method modules (and torch) on first use.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from contrastkit.pipelines.config import PretrainConfig
    from contrastkit.pipelines.methods.barlow_twins import BarlowTwins
    from contrastkit.pipelines.methods.base import Encoder, MethodOutput, PretrainMethod
    from contrastkit.pipelines.methods.byol import BYOL
    from contrastkit.pipelines.methods.dino import DINO
    from contrastkit.pipelines.methods.isd import ISD
    from contrastkit.pipelines.methods.moco import MoCo
    from contrastkit.pipelines.methods.mocov3 import MoCoV3
    from contrastkit.pipelines.methods.nnclr import NNCLR
    from contrastkit.pipelines.methods.npair import NPair
    from contrastkit.pipelines.methods.simclr import SimCLR
    from contrastkit.pipelines.methods.simsiam import SimSiam
    from contrastkit.pipelines.methods.supcon import SupCon
    from contrastkit.pipelines.methods.swav import SwAV
    from contrastkit.pipelines.methods.vicreg import VICReg

    METHODS: dict[str, type[PretrainMethod]]

# Modules of this package that hold what the methods share, not a method.
_SHARED_MODULES = ("base",)

# Public classes -> the module that defines them (imported when first asked for).
_CLASSES = {
    "BYOL": "byol",
    "BarlowTwins": "barlow_twins",
    "DINO": "dino",
    "Encoder": "base",
    "ISD": "isd",
    "MethodOutput": "base",
    "MoCo": "moco",
    "MoCoV3": "mocov3",
    "NNCLR": "nnclr",
    "NPair": "npair",
    "PretrainMethod": "base",
    "SimCLR": "simclr",
    "SimSiam": "simsiam",
    "SupCon": "supcon",
    "SwAV": "swav",
    "VICReg": "vicreg",
}


# Names other libraries and papers use -> ours, for the "did you mean" hint of a bad method.name
# (closeness of spelling alone would answer 'mocov2' with 'mocov3').
OTHER_SPELLINGS = {
    "mocov2": "moco",
    "mocov2plus": "moco",
    "moco_v2": "moco",
    "moco_v3": "mocov3",
    "barlow": "barlow_twins",
    "barlowtwins": "barlow_twins",
    "n_pair": "npair",
    "supervised_contrastive": "supcon",
}


def check_method_name(name: str) -> None:
    """ValueError unless `name` is a method name: lists them and says the one likely meant.
    Needs no torch (reads the module names)."""
    names = method_names()
    if name in names:
        return
    likely = OTHER_SPELLINGS.get(str(name).lower())
    close = [likely] if likely in names else difflib.get_close_matches(str(name), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"method.name must be one of {names}, got {name!r}{hint}")


def method_names() -> list[str]:
    """The method names, sorted, without importing a method: one module per method, named as it."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules(__path__)
        if info.name not in _SHARED_MODULES and not info.name.startswith("_")
    )


@functools.cache
def _registry() -> dict[str, type[PretrainMethod]]:
    """name -> class of every method, sorted by name (the order error messages list them in).

    Each method module must define exactly one PretrainMethod subclass with a `name`, and that
    name must be the module's: `method_names()` answers without importing, so the two agree.
    """
    from contrastkit.pipelines.methods.base import PretrainMethod

    found: dict[str, type[PretrainMethod]] = {}
    for module_name in method_names():
        module = importlib.import_module(f"{__name__}.{module_name}")
        classes = [
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and value.__module__ == module.__name__
            and issubclass(value, PretrainMethod)
            and value.name
        ]
        names = [cls.name for cls in classes]
        if names != [module_name]:
            raise TypeError(
                f"method module {module.__name__} must define one PretrainMethod subclass whose "
                f"name is the module's, {module_name!r}; it defines {names or 'none'}"
            )
        if not classes[0].default_augment:
            raise TypeError(f"method {module_name!r} declares no default_augment recipe")
        found[module_name] = classes[0]
    return found


def __getattr__(name: str) -> Any:
    # PEP 562: METHODS and the method classes are imported on first use (they need torch).
    if name == "METHODS":
        return _registry()
    if name in _CLASSES:
        return getattr(importlib.import_module(f"{__name__}.{_CLASSES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def method_class(name: str) -> type[PretrainMethod]:
    """The method class registered as `name` (ValueError listing the valid names otherwise)."""
    registry = _registry()
    if name not in registry:
        check_method_name(name)
    return registry[name]


def build_method(config: PretrainConfig, backbone: nn.Module) -> PretrainMethod:
    """The method `config.method.name` around `backbone` (which must expose `num_features`),
    given the sections it reads and the run's seed."""
    method = method_class(config.method.name)
    return method(backbone, config.method, config.model, seed=config.train.seed)


__all__ = [
    "BYOL",
    "DINO",
    "ISD",
    "METHODS",
    "NNCLR",
    "BarlowTwins",
    "Encoder",
    "MethodOutput",
    "MoCo",
    "MoCoV3",
    "NPair",
    "PretrainMethod",
    "SimCLR",
    "SimSiam",
    "SupCon",
    "SwAV",
    "VICReg",
    "build_method",
    "check_method_name",
    "method_class",
    "method_names",
]
