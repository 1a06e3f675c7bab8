"""MoCo v3 (Chen, Xie and He 2021): predictions of the online network against a momentum
encoder's keys of the other view, in-batch negatives, both directions summed; no queue.

The heads are MoCo v3's own (moco-v3 `_build_mlp`, solo-learn `MoCoV3._build_mlp`): a
`ProjectionHead` whose last Linear has no bias and whose output BatchNorm (SimCLR's design, as
the original says) has no affine parameters. i-Mix mixes each view as a query batch; the momentum encoder sees the clean views.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from contrastkit.backbones import ProjectionHead
from contrastkit.objectives import MomentumTeacher, mocov3_loss
from contrastkit.pipelines.methods.base import (
    MethodOutput,
    PretrainMethod,
    projection_head,
    stacked_label_weights,
    two_views,
)

if TYPE_CHECKING:
    from contrastkit.pipelines.config import MethodConfig, ModelConfig


def is_resnet(backbone_name: str) -> bool:
    """solo-learn's rule for MoCo v3's heads: a backbone whose name says "resnet" gets the ResNet
    heads (predictor without an output BatchNorm); every other one (ViT) the ViT heads."""
    return "resnet" in backbone_name.lower()


class MoCoV3(PretrainMethod):
    """loss = mocov3_loss(q1, q2, k1, k2, method.temperature, t1, t2)
    = ctr(q1, k2) + ctr(q2, k1), ctr(q, k) = 2T * CE(q @ k.T / T, arange(N)) on unit rows.

    q_v = predictor(projector(backbone(view v))) of the online network (view v mixed by i-Mix
    when on, t_v its virtual labels: mixed query i is positive to key i with weight lam_i and to
    key j(i) with 1 - lam_i); k_v = the momentum encoder's projection of the clean view v, no
    gradient. Keys of all ranks are negatives (gathered without gradient). The momentum encoder
    is the EMA of backbone + projector (not the predictor), its momentum rising from
    method.momentum to method.momentum_final on a cosine over the optimizer steps (solo-learn's
    CIFAR recipe: 0.99 -> 1.0). Both views go through each network in one forward, or with
    method.separate_forwards one forward per view (solo-learn).

    Heads (`ProjectionHead` with output_affine=False, output_bias=False): the projector has model.projection_layers layers (ResNet 2, ViT 3 in
    the originals), hidden width model.projection_hidden_dim, output model.projection_dim and,
    with model.projection_output_batch_norm (the preset), a BatchNorm without affine parameters
    on its output; the predictor is 2 layers, width model.prediction_hidden_dim, with that output
    BatchNorm only for non-ResNet backbones (solo-learn's rule on the backbone's name).
    """

    name = "mocov3"
    supports_imix = True
    default_augment = "byol_views"  # moco-v3 uses BYOL's two asymmetric views
    default_temperature = 0.2  # solo-learn's CIFAR recipe and moco-v3's ViT recipes
    default_momentum = 0.99  # solo-learn base_tau (moco-v3 ResNet-50: --moco-m 0.99)
    default_final_momentum = 1.0  # rises to 1 on a cosine

    @classmethod
    def preset(cls, method: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """MoCo v3's projector ends in a BatchNorm (without affine parameters): on by default."""
        return {"model": {"projection_output_batch_norm": True}}

    def __init__(
        self, backbone: nn.Module, method: MethodConfig, model: ModelConfig, *, seed: int = 0
    ) -> None:
        super().__init__(backbone, method, model, seed=seed)
        dim = self.embedding_dim
        self.predictor = ProjectionHead(
            dim,
            model.prediction_hidden_dim,
            dim,
            num_layers=2,
            output_batch_norm=not is_resnet(model.backbone),
            output_affine=False,
            output_bias=False,
        )
        self.teacher = MomentumTeacher(self.encoder)

    def projection_head(self, in_dim: int) -> nn.Module:
        """MoCo v3's projector as the model section sizes it (no bias on its last Linear, no
        affine on its output BatchNorm); nn.Identity with model.projection_layers = 0 (no head, so
        no output BatchNorm either)."""
        if self.model_config.projection_layers == 0:
            return nn.Identity()
        return projection_head(self.model_config, in_dim, output_affine=False, output_bias=False)

    def forward(
        self,
        views: list[Tensor],
        *,
        step: int,
        epoch: int = 0,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MethodOutput:
        """views: two (N, C, H, W) or (N, F) batches (one is used twice); labels are not read."""
        view1, view2 = two_views(views)
        inputs, (targets1, targets2) = self.mix_both(view1, view2, generator)
        features, projections = self.encode(self.encoder, inputs)
        q1, q2 = self.predict_pair(projections)
        with torch.no_grad():
            _, keys = self.encode(self.teacher, [view1, view2])
        k1, k2 = keys.chunk(2)
        temperature = self.method_config.temperature
        # targets made by self.mix_both: not value-checked (that check is a host sync)
        loss = mocov3_loss(q1, q2, k1, k2, temperature, targets1, targets2, validate_targets=False)
        n = view1.shape[0]
        weights = stacked_label_weights(targets1, targets2, n=n, device=view1.device)
        return MethodOutput(loss, features.detach(), weights)
