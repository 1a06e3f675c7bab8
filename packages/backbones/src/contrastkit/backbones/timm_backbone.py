"""TimmBackbone: any timm model as a feature extractor, optionally with a CIFAR stem.

Weights come from timm's own pretrained mechanism (hub or local cache) or from a local file.
timm is imported where it is used: it takes seconds (it loads torchvision and torch._dynamo),
and a run on another backbone never needs it.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from contrastkit.backbones._checks import check_bool, check_image_input, check_positive_int
from contrastkit.backbones.pretrained import describe_mismatch, resolve_weights_path

# Arguments TimmBackbone sets itself; passing them through model_kwargs would contradict it.
_RESERVED_MODEL_KWARGS = ("num_classes", "pretrained", "in_chans", "pretrained_cfg_overlay")


def timm_name_suggestions(model_name: str, limit: int = 8) -> list[str]:
    """timm model names close to `model_name`: spelling neighbours first, then names containing it."""
    import timm

    base = model_name.split(".", 1)[0]
    all_names = timm.list_models()
    close = difflib.get_close_matches(base, all_names, n=limit, cutoff=0.6)
    containing = timm.list_models(f"*{base}*") if base else []
    merged = list(dict.fromkeys([*close, *containing]))
    return merged[:limit]


def _has_resnet_stem(model: nn.Module) -> bool:
    return isinstance(getattr(model, "conv1", None), nn.Conv2d) and isinstance(
        getattr(model, "maxpool", None), nn.Module
    )


class TimmBackbone(nn.Module):
    """A timm model with its classifier removed (`num_classes=0`), returning pooled features.

    Args:
        model_name: any name `timm.list_models()` knows, optionally with a pretrained tag
            (e.g. "resnet18" or "resnet18.a1_in1k").
        cifar_stem: for ResNet-family models (a single `conv1` conv followed by `maxpool`:
            resnet*, seresnet*, resnext*, ...), replace conv1 by a 3x3 stride-1 conv with the
            same output channels and drop the max-pool, for 32x32 inputs. Any other model
            raises ValueError. The new conv is freshly initialised (Kaiming, fan-out), so
            pretrained weights for the original 7x7 stem are not used.
        pretrained: load timm's pretrained weights with timm's own mechanism. This downloads
            from the Hugging Face hub unless the weights are already in the local cache
            (`HF_HUB_OFFLINE=1` makes timm use the cache only).
        pretrained_path: load weights from a local file instead: a state_dict saved with
            `torch.save` or as `.safetensors` (read with `timm.models.load_state_dict`, which
            also unwraps "state_dict"/"model" checkpoints and a "module." prefix), or an export
            folder of `contrastkit-export` (format safetensors or timm: its model.safetensors,
            checked against the size and SHA-256 its config.json records). Keys may be those of
            the timm model or of a TimmBackbone ("model." prefix). The classifier's keys are
            ignored; with `cifar_stem=True` a conv1 weight of the original shape is ignored too
            (see above). Any other missing, unexpected or mis-shaped key raises ValueError.
        in_channels: input channels (timm's `in_chans`).
        model_kwargs: further keyword arguments for `timm.create_model`
            (e.g. {"drop_path_rate": 0.1}, or {"img_size": 32} for a ViT).

    Input: (N, in_channels, H, W) float images. Output: (N, num_features) float features, the
    input of timm's classifier; `num_features` is timm's `head_hidden_size` where the model
    has a pre-logits layer (MobileNetV3: 1024), else timm's `num_features`.
    """

    def __init__(
        self,
        model_name: str,
        *,
        cifar_stem: bool = False,
        pretrained: bool = False,
        pretrained_path: str | Path | None = None,
        in_channels: int = 3,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        import timm

        if not isinstance(model_name, str) or not timm.is_model(model_name):
            raise ValueError(
                f"unknown timm model {model_name!r}; close matches: "
                f"{timm_name_suggestions(str(model_name)) or 'none'} "
                "(timm.list_models('*pattern*') lists them all)"
            )
        check_bool("cifar_stem", cifar_stem)
        check_bool("pretrained", pretrained)
        self.in_channels = check_positive_int("in_channels", in_channels)
        if pretrained and pretrained_path is not None:
            raise ValueError(
                "give either pretrained=True (timm's hub/cache) or pretrained_path, not both; "
                f"got pretrained=True and pretrained_path={str(pretrained_path)!r}"
            )
        if pretrained_path is not None:
            pretrained_path = resolve_weights_path(pretrained_path)  # a folder: its weights
        extra = dict(model_kwargs or {})
        reserved = sorted(set(extra) & set(_RESERVED_MODEL_KWARGS))
        if reserved:
            raise ValueError(
                f"model_kwargs must not contain {reserved}: TimmBackbone sets them itself "
                "(use in_channels= and pretrained= instead)"
            )

        try:
            model = timm.create_model(
                model_name, pretrained=pretrained, num_classes=0, in_chans=in_channels, **extra
            )
        except TypeError as err:
            if not extra:
                raise
            raise ValueError(
                f"timm model {model_name!r} rejected model_kwargs {extra}: {err}"
            ) from err

        if cifar_stem:
            if not _has_resnet_stem(model):
                raise ValueError(
                    f"cifar_stem=True is defined only for ResNet-family timm models with a single "
                    f"`conv1` conv and a `maxpool` (e.g. resnet18, resnet50, seresnet50); "
                    f"timm model {model_name!r} ({type(model).__name__}) has no such stem, "
                    "use cifar_stem=False"
                )
            old: nn.Conv2d = model.conv1
            model.conv1 = nn.Conv2d(
                old.in_channels, old.out_channels, kernel_size=3, stride=1, padding=1, bias=False
            )
            nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
            model.maxpool = nn.Identity()

        if pretrained_path is not None:
            _load_local_weights(model, model_name, Path(pretrained_path), cifar_stem)

        self.model = model
        self.model_name = model_name
        # Models with a pre-logits layer (MobileNetV3, VGG) output head_hidden_size features,
        # not num_features (the last feature map's channels); timm >= 0.9.6 names both.
        self.num_features: int = int(getattr(model, "head_hidden_size", None) or model.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) images -> (N, num_features) features."""
        check_image_input(x, self.in_channels, f"TimmBackbone({self.model_name!r})")
        return self.model(x)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    return (names,) if isinstance(names, str) else tuple(names)


def _load_local_weights(model: nn.Module, model_name: str, path: Path, cifar_stem: bool) -> None:
    """Load a local state_dict into `model` (already without classifier, stem already swapped)."""
    import timm

    try:
        loaded = timm.models.load_state_dict(str(path), use_ema=False)
    except Exception as err:  # pickle, zip and safetensors each raise their own error types
        raise ValueError(
            f"pretrained_path {str(path)!r} could not be read as a state_dict: {err}"
        ) from err
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise ValueError(
            f"pretrained_path {str(path)!r} holds a {type(loaded).__name__}, not a state_dict "
            "(a mapping of parameter names to tensors)"
        )
    target = model.state_dict()
    if loaded and not (set(loaded) & set(target)) and all(k.startswith("model.") for k in loaded):
        loaded = {k.removeprefix("model."): v for k, v in loaded.items()}

    classifier = _classifier_prefixes(model)
    state = {
        k: v
        for k, v in loaded.items()
        if k in target or not any(k == c or k.startswith(c + ".") for c in classifier)
    }
    stem = state.get("conv1.weight")
    if cifar_stem and stem is not None and stem.shape != target["conv1.weight"].shape:
        del state["conv1.weight"]  # the 7x7 ImageNet stem: replaced by the fresh 3x3 one

    fresh_stem = frozenset({"conv1.weight"} if cifar_stem else ())
    problems = describe_mismatch(target, state, ignore_missing=fresh_stem)
    if problems:
        raise ValueError(
            f"pretrained_path {str(path)!r} does not fit timm model {model_name!r}: {problems}"
        )
    model.load_state_dict(state, strict=False)
