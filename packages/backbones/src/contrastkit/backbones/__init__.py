"""contrastkit.backbones: encoders for self-supervised learning and the heads that go on them.

MyResNet, CIFAR-form ResNet-18/34/50, any timm model, a tabular MLP, i-Mix's mlp_5layer;
projection, prediction and linear heads, DINO's head and weight-normalised prototypes; a
Keras-style model summary; exported weights loaded back (`pretrained_path`,
`load_exported_backbone`).
"""

from contrastkit.backbones._version import __version__
from contrastkit.backbones.dino_head import DINOHead, WeightNormLinear
from contrastkit.backbones.factory import (
    BACKBONE_NAMES,
    TABULAR_BACKBONE_NAMES,
    TIMM_PREFIX,
    check_backbone_name,
    create_backbone,
    load_exported_backbone,
)
from contrastkit.backbones.heads import LinearClassifier, PredictionHead, ProjectionHead
from contrastkit.backbones.imix_mlp import IMixMLP5
from contrastkit.backbones.mlp import TabularMLP
from contrastkit.backbones.pretrained import (
    EXPORT_CONFIG_FILE,
    EXPORT_WEIGHTS_FILE,
    WEIGHT_SOURCE_KWARGS,
    describe_mismatch,
    read_export_config,
    read_state_dict,
    resolve_weights_path,
    unwrap_state_dict,
)
from contrastkit.backbones.resnet import CifarResNet, MyResNet
from contrastkit.backbones.summary import ModelSummary, SummaryRow, model_summary
from contrastkit.backbones.timm_backbone import TimmBackbone

__all__ = [
    "BACKBONE_NAMES",
    "EXPORT_CONFIG_FILE",
    "EXPORT_WEIGHTS_FILE",
    "TABULAR_BACKBONE_NAMES",
    "TIMM_PREFIX",
    "WEIGHT_SOURCE_KWARGS",
    "CifarResNet",
    "DINOHead",
    "IMixMLP5",
    "LinearClassifier",
    "ModelSummary",
    "MyResNet",
    "PredictionHead",
    "ProjectionHead",
    "SummaryRow",
    "TabularMLP",
    "TimmBackbone",
    "WeightNormLinear",
    "__version__",
    "check_backbone_name",
    "create_backbone",
    "describe_mismatch",
    "load_exported_backbone",
    "model_summary",
    "read_export_config",
    "read_state_dict",
    "resolve_weights_path",
    "unwrap_state_dict",
]
