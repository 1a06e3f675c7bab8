"""Evaluation of a pretrained backbone: features, kNN, linear probe, fine-tuning, t-SNE, reports.

One concept per module: `pretrained` reads a checkpoint back, `features` / `feature_cache` turn it
into (N, D) features, `knn`, `linear_probe` and `finetune` judge them, `tsne` embeds them,
`results` and `report` write what came out. Nothing here imports the training engine, the
tasks (pretrain, joint, probe) or matplotlib; scikit-learn is imported only by `tsne_embedding`.
"""

from contrastkit.pipelines.evaluation.feature_cache import (
    cache_key,
    cached_features,
    checkpoint_features,
    feature_cache_path,
    file_sha256,
)
from contrastkit.pipelines.evaluation.features import (
    extract_features,
    identity_transform,
    view_size,
)
from contrastkit.pipelines.evaluation.finetune import (
    BackboneWithHead,
    StandardizedLinear,
    ViewTrainingResult,
    shared_standardization,
    train_on_views,
)
from contrastkit.pipelines.evaluation.inputs import check_features, check_labels, check_same_space
from contrastkit.pipelines.evaluation.knn import (
    knn_accuracy,
    knn_predict,
    nearest_neighbours,
    topk_accuracy,
)
from contrastkit.pipelines.evaluation.linear_probe import (
    SOLVERS,
    LinearProbeResult,
    label_fraction_indices,
    standardization,
    train_linear_probe,
)
from contrastkit.pipelines.evaluation.pretrained import (
    PretrainedCheckpoint,
    build_backbone,
    check_input_compatibility,
    find_checkpoint,
    load_checkpoint,
)
from contrastkit.pipelines.evaluation.report import (
    FIGURE_CAPTIONS,
    RANDOM_INIT,
    ReportSection,
    model_summary_markdown,
    probe_summary_markdown,
    write_probe_report,
    write_report,
)
from contrastkit.pipelines.evaluation.results import (
    RESULTS_COLUMNS,
    append_results,
    read_history_csv,
    read_results,
    results_table_markdown,
    write_history_csv,
)
from contrastkit.pipelines.evaluation.tsne import TsneEmbedding, tsne_embedding

__all__ = [
    "FIGURE_CAPTIONS",
    "RANDOM_INIT",
    "RESULTS_COLUMNS",
    "SOLVERS",
    "BackboneWithHead",
    "LinearProbeResult",
    "PretrainedCheckpoint",
    "ReportSection",
    "StandardizedLinear",
    "TsneEmbedding",
    "ViewTrainingResult",
    "append_results",
    "build_backbone",
    "cache_key",
    "cached_features",
    "check_features",
    "check_input_compatibility",
    "check_labels",
    "check_same_space",
    "checkpoint_features",
    "extract_features",
    "feature_cache_path",
    "file_sha256",
    "find_checkpoint",
    "identity_transform",
    "knn_accuracy",
    "knn_predict",
    "label_fraction_indices",
    "load_checkpoint",
    "model_summary_markdown",
    "nearest_neighbours",
    "probe_summary_markdown",
    "read_history_csv",
    "read_results",
    "results_table_markdown",
    "shared_standardization",
    "standardization",
    "topk_accuracy",
    "train_linear_probe",
    "train_on_views",
    "tsne_embedding",
    "view_size",
    "write_history_csv",
    "write_probe_report",
    "write_report",
]
