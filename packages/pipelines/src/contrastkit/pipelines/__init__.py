"""contrastkit.pipelines: pretrain, evaluate and report self-supervised encoders, on accelerate.

The pretrain pipeline (SimCLR, N-pair, MoCo v2, BYOL, ISD, optionally with i-Mix) with its config,
methods, optimizers, checkpoints and metrics log; the datasets it reads; and the evaluation
library (kNN, linear probe, features, t-SNE, plots, reports).
"""

from contrastkit.pipelines._version import __version__
from contrastkit.pipelines.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    read_meta,
    resolve_checkpoint,
)
from contrastkit.pipelines.config import (
    METHOD_NAMES,
    DataConfig,
    MethodConfig,
    ModelConfig,
    OptimizerConfig,
    PretrainConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from contrastkit.pipelines.data import (
    DATASET_NAMES,
    DeviceBatches,
    ImageFolderDataset,
    InMemoryDataset,
    LoaderBatches,
    balanced_subset,
    epoch_permutation,
    load_dataset,
)
from contrastkit.pipelines.features import extract_features
from contrastkit.pipelines.knn import knn_accuracy, knn_predict, nearest_neighbours, topk_accuracy
from contrastkit.pipelines.linear_probe import (
    LinearProbeResult,
    label_fraction_indices,
    train_linear_probe,
)
from contrastkit.pipelines.methods import (
    BYOL,
    ISD,
    METHODS,
    MethodOutput,
    MoCo,
    NPair,
    PretrainMethod,
    SimCLR,
    build_method,
)
from contrastkit.pipelines.metrics import METRIC_COLUMNS, MetricsLogger, read_metrics
from contrastkit.pipelines.optim import (
    LARS,
    WarmupCosine,
    build_optimizer,
    build_scheduler,
    parameter_groups,
    scaled_lr,
)
from contrastkit.pipelines.plots import (
    plot_compare,
    plot_nn_grid,
    plot_pretrain_curves,
    plot_probe_curves,
    plot_tsne,
)
from contrastkit.pipelines.pretrain import (
    NonFiniteLossError,
    PretrainModel,
    PretrainResult,
    run_pretrain,
)
from contrastkit.pipelines.report import (
    append_results,
    read_results,
    results_table_markdown,
    write_report,
)
from contrastkit.pipelines.tsne import TsneEmbedding, tsne_embedding

__all__ = [
    "BYOL",
    "DATASET_NAMES",
    "ISD",
    "LARS",
    "METHODS",
    "METHOD_NAMES",
    "METRIC_COLUMNS",
    "DataConfig",
    "DeviceBatches",
    "ImageFolderDataset",
    "InMemoryDataset",
    "LinearProbeResult",
    "LoaderBatches",
    "MethodConfig",
    "MethodOutput",
    "MetricsLogger",
    "MoCo",
    "ModelConfig",
    "NPair",
    "NonFiniteLossError",
    "OptimizerConfig",
    "PretrainConfig",
    "PretrainMethod",
    "PretrainModel",
    "PretrainResult",
    "SimCLR",
    "TrainConfig",
    "TsneEmbedding",
    "WarmupCosine",
    "__version__",
    "append_results",
    "balanced_subset",
    "build_method",
    "build_optimizer",
    "build_scheduler",
    "config_from_dict",
    "config_to_dict",
    "epoch_permutation",
    "extract_features",
    "knn_accuracy",
    "knn_predict",
    "label_fraction_indices",
    "latest_checkpoint",
    "list_checkpoints",
    "load_config",
    "load_dataset",
    "nearest_neighbours",
    "parameter_groups",
    "plot_compare",
    "plot_nn_grid",
    "plot_pretrain_curves",
    "plot_probe_curves",
    "plot_tsne",
    "read_meta",
    "read_metrics",
    "read_results",
    "resolve_checkpoint",
    "results_table_markdown",
    "run_pretrain",
    "save_config",
    "scaled_lr",
    "topk_accuracy",
    "train_linear_probe",
    "tsne_embedding",
    "write_report",
]
