"""contrastkit.pipelines: pretrain, train jointly, probe and compare self-supervised encoders on accelerate.

The public API is what a user calls: the run functions, the config classes, the method registry,
the dataset readers and the probe's building blocks. Everything else is reached by its module
path; the package README opens with a map from each concept to its module.

Importing the package loads nothing heavy: each name is imported from its module on first use
(PEP 562), so `contrastkit.pipelines.config` and the command line's config check run without
torch, accelerate or timm.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from contrastkit.pipelines._version import __version__

if TYPE_CHECKING:
    from contrastkit.pipelines.config import (
        JointTrainingConfig,
        PretrainConfig,
        config_from_dict,
        config_to_dict,
        load_config,
        save_config,
    )
    from contrastkit.pipelines.data import (
        DATASET_NAMES,
        ImageFolderDataset,
        InMemoryDataset,
        load_dataset,
    )
    from contrastkit.pipelines.evaluation import (
        LinearProbeResult,
        extract_features,
        knn_accuracy,
        load_checkpoint,
        train_linear_probe,
    )
    from contrastkit.pipelines.export import export_backbone
    from contrastkit.pipelines.joint import run_joint
    from contrastkit.pipelines.methods import (
        METHODS,
        MethodOutput,
        PretrainMethod,
        build_method,
        method_class,
    )
    from contrastkit.pipelines.pretrain import run_pretrain
    from contrastkit.pipelines.probe import run_probe
    from contrastkit.pipelines.training.task import NonFiniteLossError, PretrainResult

# Public name -> the module it is imported from on first use.
_HOMES = {
    "JointTrainingConfig": "contrastkit.pipelines.config",
    "PretrainConfig": "contrastkit.pipelines.config",
    "config_from_dict": "contrastkit.pipelines.config",
    "config_to_dict": "contrastkit.pipelines.config",
    "load_config": "contrastkit.pipelines.config",
    "save_config": "contrastkit.pipelines.config",
    "DATASET_NAMES": "contrastkit.pipelines.data",
    "ImageFolderDataset": "contrastkit.pipelines.data",
    "InMemoryDataset": "contrastkit.pipelines.data",
    "load_dataset": "contrastkit.pipelines.data",
    "LinearProbeResult": "contrastkit.pipelines.evaluation",
    "extract_features": "contrastkit.pipelines.evaluation",
    "knn_accuracy": "contrastkit.pipelines.evaluation",
    "load_checkpoint": "contrastkit.pipelines.evaluation",
    "train_linear_probe": "contrastkit.pipelines.evaluation",
    "export_backbone": "contrastkit.pipelines.export",
    "run_joint": "contrastkit.pipelines.joint",
    "METHODS": "contrastkit.pipelines.methods",
    "MethodOutput": "contrastkit.pipelines.methods",
    "PretrainMethod": "contrastkit.pipelines.methods",
    "build_method": "contrastkit.pipelines.methods",
    "method_class": "contrastkit.pipelines.methods",
    "run_pretrain": "contrastkit.pipelines.pretrain",
    "run_probe": "contrastkit.pipelines.probe",
    "NonFiniteLossError": "contrastkit.pipelines.training.task",
    "PretrainResult": "contrastkit.pipelines.training.task",
}


def __getattr__(name: str) -> Any:
    # PEP 562: a public name is imported from its home when first asked for. Anything else
    # (a submodule not imported yet) is an AttributeError, so `import` then loads the submodule.
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "DATASET_NAMES",
    "METHODS",
    "ImageFolderDataset",
    "InMemoryDataset",
    "JointTrainingConfig",
    "LinearProbeResult",
    "MethodOutput",
    "NonFiniteLossError",
    "PretrainConfig",
    "PretrainMethod",
    "PretrainResult",
    "__version__",
    "build_method",
    "config_from_dict",
    "config_to_dict",
    "export_backbone",
    "extract_features",
    "knn_accuracy",
    "load_checkpoint",
    "load_config",
    "load_dataset",
    "method_class",
    "run_joint",
    "run_pretrain",
    "run_probe",
    "save_config",
    "train_linear_probe",
]
