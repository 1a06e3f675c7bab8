"""contrastkit.backbones: encoders for self-supervised learning and the heads that go on them.

MyResNet, CIFAR-form ResNet-18/34/50, any timm model, a tabular MLP, i-Mix's mlp_5layer;
projection, prediction and linear heads, DINO's head and weight-normalised prototypes; a
Keras-style model summary.
"""

from contrastkit.backbones._version import __version__
from contrastkit.backbones.dino_head import DINOHead, WeightNormLinear
from contrastkit.backbones.factory import (
    BACKBONE_NAMES,
    TABULAR_BACKBONE_NAMES,
    TIMM_PREFIX,
    check_backbone_name,
    create_backbone,
)
from contrastkit.backbones.heads import LinearClassifier, PredictionHead, ProjectionHead
from contrastkit.backbones.imix_mlp import IMixMLP5
from contrastkit.backbones.mlp import TabularMLP
from contrastkit.backbones.resnet import CifarResNet, MyResNet
from contrastkit.backbones.summary import ModelSummary, SummaryRow, model_summary
from contrastkit.backbones.timm_backbone import TimmBackbone

__all__ = [
    "BACKBONE_NAMES",
    "TABULAR_BACKBONE_NAMES",
    "TIMM_PREFIX",
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
    "model_summary",
]
