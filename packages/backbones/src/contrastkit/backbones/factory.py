"""create_backbone: one entry point that builds any contrastkit backbone from a name and kwargs.

Used by the pipelines' configs, so every bad name or keyword fails with a ValueError that
lists what is allowed.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from contrastkit.backbones.imix_mlp import COVTYPE_INPUT_GROUPS, IMixMLP5
from contrastkit.backbones.mlp import TabularMLP
from contrastkit.backbones.pretrained import (
    EXPORT_CONFIG_FILE,
    WEIGHT_SOURCE_KWARGS,
    load_backbone_weights,
    read_export_config,
    resolve_weights_path,
)
from contrastkit.backbones.resnet import CifarResNet, MyResNet
from contrastkit.backbones.timm_backbone import TimmBackbone, timm_name_suggestions

TIMM_PREFIX = "timm:"
"""Prefix that selects a timm model: "timm:<name>" with any name `timm.list_models()` knows."""


def _myresnet(*, in_channels: int = 3, zero_init_residual: bool = False) -> MyResNet:
    return MyResNet(in_channels=in_channels, zero_init_residual=zero_init_residual)


def _resnet18_cifar(*, in_channels: int = 3, zero_init_residual: bool = False) -> CifarResNet:
    return CifarResNet(
        (2, 2, 2, 2), "basic", in_channels=in_channels, zero_init_residual=zero_init_residual
    )


def _resnet34_cifar(*, in_channels: int = 3, zero_init_residual: bool = False) -> CifarResNet:
    return CifarResNet(
        (3, 4, 6, 3), "basic", in_channels=in_channels, zero_init_residual=zero_init_residual
    )


def _resnet50_cifar(*, in_channels: int = 3, zero_init_residual: bool = False) -> CifarResNet:
    return CifarResNet(
        (3, 4, 6, 3), "bottleneck", in_channels=in_channels, zero_init_residual=zero_init_residual
    )


def _require_in_features(name: str, in_features: int | None) -> int:
    # Tabular pipelines fill in_features from the data; a direct call must pass it.
    if in_features is None:
        raise ValueError(
            f"backbone {name!r} needs in_features=<number of input columns> (54 for Covertype)"
        )
    return in_features


def _mlp(*, in_features: int | None = None, width: int = 2048, num_layers: int = 5) -> TabularMLP:
    in_features = _require_in_features("mlp", in_features)
    return TabularMLP(in_features, width=width, num_layers=num_layers)


def _imix_mlp5(
    *,
    in_features: int | None = None,
    input_groups: Sequence[int] | None = COVTYPE_INPUT_GROUPS,
    width_multiplier: float = 1.0,
) -> IMixMLP5:
    in_features = _require_in_features("imix_mlp5", in_features)
    return IMixMLP5(in_features, input_groups=input_groups, width_multiplier=width_multiplier)


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "myresnet": _myresnet,
    "resnet18_cifar": _resnet18_cifar,
    "resnet34_cifar": _resnet34_cifar,
    "resnet50_cifar": _resnet50_cifar,
    "mlp": _mlp,
    "imix_mlp5": _imix_mlp5,
}

BACKBONE_NAMES: tuple[str, ...] = tuple(_BUILDERS)
"""Fixed backbone names; any "timm:<name>" is valid as well (see TIMM_PREFIX)."""

TABULAR_BACKBONE_NAMES: tuple[str, ...] = ("mlp", "imix_mlp5")
"""The backbones that take (N, in_features) rows; every other name takes images."""


def _valid_names_text() -> str:
    return ", ".join(repr(n) for n in BACKBONE_NAMES) + f", or '{TIMM_PREFIX}<any timm model name>'"


def check_backbone_name(name: str) -> None:
    """Raise ValueError unless `create_backbone(name)` would accept `name`.

    Cheap enough for config validation: it builds nothing. The message lists the valid names
    and the closest matches (for "timm:" names, the closest timm models).
    """
    if not isinstance(name, str):
        raise ValueError(f"backbone name must be a str, got {name!r}; valid: {_valid_names_text()}")
    if name in _BUILDERS:
        return
    import timm  # here: importing timm takes seconds, and only timm names need it

    if name.startswith(TIMM_PREFIX):
        model_name = name[len(TIMM_PREFIX) :]
        if timm.is_model(model_name):
            return
        close = [TIMM_PREFIX + n for n in timm_name_suggestions(model_name)]
        raise ValueError(
            f"unknown timm model {model_name!r} in backbone name {name!r}; "
            f"close matches: {close or 'none'} (timm.list_models('*pattern*') lists them all)"
        )
    close = difflib.get_close_matches(name.lower(), BACKBONE_NAMES, n=3, cutoff=0.5)
    if timm.is_model(name):
        close.append(TIMM_PREFIX + name)
    hint = f"; did you mean {close}?" if close else ""
    raise ValueError(f"unknown backbone {name!r}: valid names are {_valid_names_text()}{hint}")


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build a feature extractor by name. Every result maps inputs to (N, num_features).

    Names and their keyword arguments:
        "myresnet": MyResNet (512 features). in_channels=3, zero_init_residual=False.
        "resnet18_cifar", "resnet34_cifar": CifarResNet with BasicBlocks (512 features).
            in_channels=3, zero_init_residual=False.
        "resnet50_cifar": CifarResNet with Bottlenecks (2048 features). Same kwargs.
        "mlp": TabularMLP (`width` features). in_features (required), width=2048, num_layers=5.
        "imix_mlp5": IMixMLP5, i-Mix's mlp_5layer (2048 features at width_multiplier=1.0).
            in_features (required), input_groups=(10, 4, 40), width_multiplier=1.0.
        "timm:<model name>": TimmBackbone. cifar_stem=False, pretrained=False,
            pretrained_path=None, in_channels=3, model_kwargs=None.

    Every name also takes pretrained_path=None: weights to load into the new backbone, a state
    dict file (`.safetensors`, or `torch.save` such as a checkpoint's backbone.pt) or an export
    folder of `contrastkit-export --format safetensors` (its model.safetensors, checked against
    the size and SHA-256 its config.json records). The keys and shapes must be exactly the
    backbone's; timm backbones are more lenient (their classifier and, with cifar_stem=True, an
    ImageNet stem are ignored: see TimmBackbone).

    Image backbones take (N, in_channels, H, W) floats; the TABULAR_BACKBONE_NAMES ("mlp",
    "imix_mlp5") take (N, in_features) floats.
    The module has an int attribute `num_features`.

    Raises:
        ValueError: unknown name (the message lists valid names and close matches), a keyword
            argument the family does not take, an invalid value, or weights that do not fit (one
            line naming the missing and unexpected keys and the shape mismatches).
    """
    check_backbone_name(name)
    if name.startswith(TIMM_PREFIX):
        builder: Callable[..., nn.Module] = TimmBackbone
        allowed = [p for p in inspect.signature(TimmBackbone).parameters if p != "model_name"]
        positional: tuple[Any, ...] = (name[len(TIMM_PREFIX) :],)
    else:
        builder = _BUILDERS[name]
        allowed = [*inspect.signature(builder).parameters, "pretrained_path"]
        positional = ()
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(
            f"backbone {name!r} does not take keyword argument(s) {unknown}; it takes {allowed}"
        )
    if name.startswith(TIMM_PREFIX):
        return builder(*positional, **kwargs)
    pretrained_path = kwargs.pop("pretrained_path", None)
    backbone = builder(**kwargs)
    if pretrained_path is not None:
        load_backbone_weights(backbone, pretrained_path, f"backbone {name!r} with kwargs {kwargs}")
    return backbone


def load_exported_backbone(path: str | Path) -> nn.Module:
    """The backbone of an export folder (`contrastkit-export --format safetensors` or `timm`), or
    of the weights file inside one: `create_backbone(backbone.name, **backbone.kwargs,
    pretrained_path=...)` with the name and arguments its config.json records.

    Returned in training mode, like every new module: call `.eval()` before extracting features.
    Input and output as `create_backbone` says; config.json's `input` holds the size and the
    normalization the backbone was trained with.

    Raises:
        ValueError: `path` is not such a folder or file, its config.json names no backbone, or
            the weights are damaged or do not fit (one line each).
    """
    file = resolve_weights_path(path)
    config = read_export_config(file.parent) or {}
    backbone = config.get("backbone")
    if not isinstance(backbone, dict) or not isinstance(backbone.get("name"), str):
        raise ValueError(
            f"{str(file.parent / EXPORT_CONFIG_FILE)!r} does not name a backbone (backbone.name); "
            "pass the weights to create_backbone(name, pretrained_path=...) instead"
        )
    kwargs = {
        key: value
        for key, value in dict(backbone.get("kwargs") or {}).items()
        if key not in WEIGHT_SOURCE_KWARGS
    }
    return create_backbone(backbone["name"], **kwargs, pretrained_path=file)
