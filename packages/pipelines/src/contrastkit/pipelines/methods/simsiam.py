"""SimSiam (Chen & He 2021): a predictor regresses the other view's projection, stop-gradient on it.

No teacher, no negatives: the target is the same encoder's projection, detached. i-Mix mixes each
view as a query, as for BYOL; the targets then come from a forward of the clean views.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from contrastkit.backbones import PredictionHead
from contrastkit.objectives import simsiam_loss
from contrastkit.pipelines.methods.base import (
    MethodOutput,
    PretrainMethod,
    projection_head,
    stacked_label_weights,
    two_views,
)

if TYPE_CHECKING:
    from contrastkit.pipelines.config import MethodConfig, ModelConfig


class SimSiam(PretrainMethod):
    """loss = simsiam_loss(p1, p2, z1, z2, t1, t2) = -(mean cos(p1, z2) + mean cos(p2, z1)) / 2.

    z = projection(view) from the encoder, p = predictor(z); z is detached inside the loss (the
    stop-gradient), as solo-learn's `simsiam_loss_func(p1, z2) / 2 + simsiam_loss_func(p2, z1) / 2`
    (solo/methods/simsiam.py). Both views go through the encoder (and the predictor) in one
    forward, one BatchNorm batch of 2N, or with method.separate_forwards one forward per view, as
    solo-learn does.

    With i-Mix (the BYOL form) each view is mixed within the batch as a query: p1, p2 come from the
    mixed views, z1, z2 from a second forward of the clean views without gradient (the stop-gradient
    branch, in the place of BYOL's target network), and t1, t2 are the virtual labels: the p1
    direction is `-mean_i sum_j t1_ij cos(p1_i, z2_j)`.

    The projection head is the model section's; with model.projection_output_batch_norm its output
    BatchNorm has no affine parameters, as the original's `BatchNorm1d(dim, affine=False)`.
    """

    name = "simsiam"
    supports_imix = True
    default_augment = "mocov2_views"  # facebookresearch/simsiam main_simsiam.py: MoCo v2's views
    default_temperature = None  # a regression, no softmax

    @classmethod
    def preset(cls, method: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """SimSiam's projector has three Linear layers (facebookresearch/simsiam simsiam/builder.py,
        solo-learn solo/methods/simsiam.py); the config's other head fields stand."""
        return {"model": {"projection_layers": 3}}

    def __init__(
        self, backbone: nn.Module, method: MethodConfig, model: ModelConfig, *, seed: int = 0
    ) -> None:
        super().__init__(backbone, method, model, seed=seed)
        dim = self.embedding_dim
        self.predictor = PredictionHead(dim, model.prediction_hidden_dim, dim)

    def static_lr_modules(self) -> list[nn.Module]:
        """The predictor keeps the peak lr for the whole run (no warm-up, no cosine), as
        solo-learn's SimSiam (`static_lr: True` on its predictor's parameter group) and
        facebookresearch/simsiam's `--fix-pred-lr`, which its CIFAR recipe uses."""
        return [self.predictor]

    def projection_head(self, in_dim: int) -> nn.Module:
        """The model section's head; its output BatchNorm, if any, without affine parameters."""
        return projection_head(self.model_config, in_dim, output_affine=False)

    def forward(
        self,
        views: list[Tensor],
        *,
        step: int,
        epoch: int = 0,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MethodOutput:
        view1, view2 = two_views(views)
        inputs, (targets1, targets2) = self.mix_both(view1, view2, generator)
        features, projections = self.encode(self.encoder, inputs)
        p1, p2 = self.predict_pair(projections)
        if targets1 is None and targets2 is None:
            z1, z2 = projections.chunk(2)
        else:
            with torch.no_grad():
                z1, z2 = self.encode(self.encoder, [view1, view2])[1].chunk(2)
        # targets made by self.mix_both: not value-checked (that check is a host sync)
        loss = simsiam_loss(p1, p2, z1, z2, targets1, targets2, validate_targets=False)
        n = view1.shape[0]
        weights = stacked_label_weights(targets1, targets2, n=n, device=view1.device)
        return MethodOutput(loss, features.detach(), weights)
