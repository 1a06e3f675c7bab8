"""contrastkit.pipelines: pretrain, train jointly, probe and compare self-supervised encoders on accelerate.

The public API is what a user calls: the run functions, the config classes, the method registry,
the dataset readers and the probe's building blocks. Everything else is reached by its module
path; the package README opens with a map from each concept to its module.
"""

from contrastkit.pipelines._version import __version__
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
