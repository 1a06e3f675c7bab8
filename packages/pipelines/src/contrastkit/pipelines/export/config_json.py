"""The config.json of an export folder: how to rebuild the backbone (create_backbone name and
arguments), what it takes (input size, channels, normalization) and gives (num_features), which
versions wrote it, and where it came from (run, checkpoint, step, the run's config and meta).

`contrastkit.backbones.load_exported_backbone` and the probe read it back; so can anyone with
a JSON reader (the model card shows how).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from contrastkit.augment import dataset_normalization
from contrastkit.backbones import WEIGHT_SOURCE_KWARGS
from contrastkit.pipelines.checkpoint_integrity import FILES_KEY, file_sha256
from contrastkit.pipelines.data import AUGMENT_DATASET
from contrastkit.pipelines.evaluation.pretrained import PretrainedCheckpoint

EXPORT_LAYOUT = 1  # config.json's "contrastkit_export": bump when its fields change meaning

_PACKAGES = ("backbones", "pipelines", "augment", "objectives")
_DISTRIBUTIONS = ("torch", "timm", "safetensors")


def versions() -> dict[str, str]:
    """The version of each contrastkit package (its `__version__`) and of torch, timm and
    safetensors (those installed)."""
    found = {}
    for package in _PACKAGES:
        module = importlib.import_module(f"contrastkit.{package}._version")
        found[f"contrastkit-{package}"] = module.__version__
    for name in _DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def backbone_spec(checkpoint: PretrainedCheckpoint, backbone: nn.Module) -> dict[str, Any]:
    """{"name", "kwargs", "class", "num_features", "num_parameters"}: `create_backbone(name,
    **kwargs)` rebuilds the network. pretrained / pretrained_path are left out: they said where
    the run's initial weights came from (`initialized_from` keeps it)."""
    kwargs = checkpoint.backbone_kwargs
    spec: dict[str, Any] = {
        "name": checkpoint.backbone_name,
        "kwargs": {k: v for k, v in kwargs.items() if k not in WEIGHT_SOURCE_KWARGS},
        "class": type(backbone).__name__,
        "num_features": int(backbone.num_features),
        "num_parameters": sum(p.numel() for p in backbone.parameters()),
    }
    source = {k: str(v) for k, v in kwargs.items() if k in WEIGHT_SOURCE_KWARGS and v}
    if source:
        spec["initialized_from"] = source
    return spec


def input_spec(checkpoint: PretrainedCheckpoint, backbone: nn.Module) -> dict[str, Any]:
    """What the backbone takes, as its pretraining fed it.

    Images: {"kind": "image", "channels", "height", "width", "dtype", "normalization": {"dataset",
    "mean", "std", "formula"}}; tabular rows: {"kind": "tabular", "features", "dtype",
    "standardize"} (the data's tabular_options; the column means and stds were the training
    rows', and are not stored).
    """
    if checkpoint.input_kind == "tabular":
        options = checkpoint.tabular_options
        return {
            "kind": "tabular",
            "shape": ["N", int(backbone.in_features)],
            "features": int(backbone.in_features),
            "dtype": "float32",
            "standardize": options.get("standardize", "nonbinary"),
            "note": "rows standardized as in pretraining (data.tabular_options): each column "
            "minus the training rows' mean, divided by their std",
        }
    view_dataset = AUGMENT_DATASET[checkpoint.dataset]
    stats = dataset_normalization(view_dataset)
    assert stats is not None  # image datasets all have statistics
    mean, std = stats
    size = int(checkpoint.image_size or 32)
    channels = int(getattr(backbone, "in_channels", 3))
    return {
        "kind": "image",
        "shape": ["N", channels, size, size],
        "channels": channels,
        "height": size,
        "width": size,
        "dtype": "float32",
        "normalization": {
            "dataset": view_dataset,
            "mean": list(mean),
            "std": list(std),
            "formula": "(pixels / 255 - mean) / std per channel, RGB order",
        },
    }


def example_input(spec: dict[str, Any], batch: int, seed: int = 0) -> torch.Tensor:
    """A seeded (batch, *input shape) float32 tensor in the range of normalized inputs."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *spec["shape"][1:], generator=generator)


def export_config(
    checkpoint: PretrainedCheckpoint,
    backbone: nn.Module,
    export_format: str,
    folder: Path,
    files: list[str],
    *,
    weights: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The config.json of an export written to `folder`.

    files: the files of `folder` recorded with their size and SHA-256 ("files"), so a reader can
        check them: the weights or the TorchScript program (not the README, which one may edit).
    weights: the state dict file of a safetensors / timm export (None for a program format).
    extra: format-specific entries (the torchscript or torch_export file, timm's own fields).
    """
    config: dict[str, Any] = {"contrastkit_export": EXPORT_LAYOUT, "format": export_format}
    if weights is not None:
        config["weights"] = weights
    config |= {
        "backbone": backbone_spec(checkpoint, backbone),
        "input": input_spec(checkpoint, backbone),
        "output": {
            "shape": ["N", int(backbone.num_features)],
            "what": "pooled features (the input of a linear classifier), backbone in eval mode",
        },
        "versions": versions(),
        "source": {
            "run_dir": str(checkpoint.run_dir.resolve()),
            "checkpoint": str(checkpoint.path.resolve()),
            "step": checkpoint.step,
            "epochs": checkpoint.epochs,
            "task": checkpoint.meta.get("task", "pretrain"),
            "method": checkpoint.method,
            "dataset": checkpoint.dataset,
            "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
        **(extra or {}),
        FILES_KEY: {
            name: {"bytes": (folder / name).stat().st_size, "sha256": file_sha256(folder / name)}
            for name in files
        },
        "checkpoint_meta": {k: v for k, v in checkpoint.meta.items() if k != FILES_KEY},
        "training_config": checkpoint.config,
    }
    return config
