"""Which timm model a contrastkit backbone is, for `contrastkit-export --format timm`.

A `timm:<name>` backbone is timm's `<name>` built with `num_classes=0` (TimmBackbone keeps it as
`.model`, so its keys lose the `model.` prefix), and `timm.create_model(name, pretrained=True,
pretrained_cfg_overlay=dict(file=...), num_classes=0)` loads its weights with no missing or
unexpected key. The CIFAR-stem ResNets have no timm model: every timm ResNet's stem downsamples
4x (a stride-2 7x7 conv or a deep stem whose first 3x3 conv has stride 2, then a stride-2
max-pool or conv; `stem_type` and `replace_stem_pool` choose among these only), while theirs is
one 3x3 stride-1 conv without a pool. The state dict keys of `resnet18_cifar` are timm
`resnet18`'s, but its conv1.weight is (64, 3, 3, 3) where timm's is (64, 3, 7, 7), and the
network would compute something else anyway. The tabular backbones are no image model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from contrastkit.backbones import TIMM_PREFIX, describe_mismatch
from contrastkit.pipelines.evaluation.pretrained import PretrainedCheckpoint

_CIFAR_STEM = (
    "its stem is one 3x3 stride-1 conv without max-pool, while every timm ResNet's stem "
    "downsamples 4x (a stride-2 conv, then a stride-2 max-pool or conv)"
)
_INSTEAD = (
    "export it with --format safetensors (its README.md loads it without contrastkit), "
    "--format torch_export or --format torchscript"
)
# Backbone name -> why --format timm refuses it (each said in one line with what to use instead).
NO_TIMM_MODEL: dict[str, str] = {
    "myresnet": f"timm has no model matching MyResNet: {_CIFAR_STEM}, and no ResNet has its "
    "2, 1, 1, 1 blocks",
    "resnet18_cifar": "timm has no model matching ResNet-18-CIFAR (its keys are timm resnet18's, "
    f"but conv1 is 3x3, not 7x7): {_CIFAR_STEM}",
    "resnet34_cifar": f"timm has no model matching ResNet-34-CIFAR: {_CIFAR_STEM}",
    "resnet50_cifar": f"timm has no model matching ResNet-50-CIFAR: {_CIFAR_STEM}",
    "mlp": "timm holds image models only; 'mlp' is a tabular MLP",
    "imix_mlp5": "timm holds image models only; 'imix_mlp5' is i-Mix's tabular MLP",
}


@dataclass(frozen=True)
class TimmTarget:
    """The timm call that rebuilds a `timm:` backbone: `timm.create_model(model_name,
    num_classes=0, **create_kwargs)` (create_kwargs: in_chans when not 3, the run's
    model_kwargs)."""

    model_name: str
    create_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        """The model name without a pretrained tag ("resnet18" of "resnet18.a1_in1k")."""
        return self.model_name.split(".", 1)[0]


def timm_target(checkpoint: PretrainedCheckpoint) -> TimmTarget:
    """The timm model of the checkpoint's backbone; ValueError saying why there is none (one line,
    naming the backbone and what to export it as instead)."""
    name, kwargs = checkpoint.backbone_name, checkpoint.backbone_kwargs
    if not name.startswith(TIMM_PREFIX):
        reason = NO_TIMM_MODEL.get(name, f"timm has no model matching backbone {name!r}")
        raise ValueError(f"--format timm: {reason}; {_INSTEAD}")
    model_name = name[len(TIMM_PREFIX) :]
    if kwargs.get("cifar_stem"):
        raise ValueError(
            f"--format timm: backbone {name!r} with cifar_stem=True has no timm model: "
            f"{_CIFAR_STEM}, so timm.create_model({model_name!r}) builds another stem (conv1.weight "
            f"would not fit); {_INSTEAD}"
        )
    create_kwargs = dict(kwargs.get("model_kwargs") or {})
    if int(kwargs.get("in_channels", 3)) != 3:
        create_kwargs["in_chans"] = int(kwargs["in_channels"])
    return TimmTarget(model_name, create_kwargs)


def timm_state_dict(backbone: nn.Module, target: TimmTarget) -> dict[str, torch.Tensor]:
    """The timm model's own state dict (TimmBackbone's without its `model.` prefix), checked to
    have exactly the keys and shapes of `timm.create_model(target...)`, built on the meta device
    (ValueError naming the mismatch otherwise)."""
    import timm

    state = backbone.model.state_dict()
    try:
        with torch.device("meta"):
            reference = timm.create_model(target.model_name, num_classes=0, **target.create_kwargs)
    except (RuntimeError, NotImplementedError):  # a model whose init needs real tensors
        reference = timm.create_model(target.model_name, num_classes=0, **target.create_kwargs)
    problems = describe_mismatch(reference.state_dict(), state)
    if problems:
        raise ValueError(
            f"--format timm: timm.create_model({target.model_name!r}, num_classes=0, "
            f"**{target.create_kwargs}) does not build this backbone's network: {problems}"
        )
    return state


# pretrained_cfg fields that describe the network and its input, kept from the model's own cfg;
# where the weights came from (url, hub id, license, tag) does not describe these weights.
_KEPT_CFG = ("interpolation", "first_conv", "classifier", "fixed_input_size", "pool_size")


def timm_hub_config(
    backbone: nn.Module, target: TimmTarget, input_spec: dict[str, Any]
) -> dict[str, Any]:
    """The fields of timm's own config.json (as its hub exports write them), so that
    `timm.create_model("local-dir:<folder>", pretrained=True)` rebuilds the model and its data
    config (mean, std, input size) from the export folder alone."""
    own = dict(getattr(backbone.model, "pretrained_cfg", None) or {})
    normalization = input_spec["normalization"]
    pretrained_cfg = {key: own[key] for key in _KEPT_CFG if key in own}
    pretrained_cfg |= {
        "input_size": [input_spec["channels"], input_spec["height"], input_spec["width"]],
        "crop_pct": 1.0,
        "mean": normalization["mean"],
        "std": normalization["std"],
        "num_classes": 0,
    }
    return {
        "architecture": target.architecture,
        "num_classes": 0,
        "num_features": int(backbone.num_features),
        "pretrained_cfg": pretrained_cfg,
        "model_args": dict(target.create_kwargs),
    }
