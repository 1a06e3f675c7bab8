"""BYOL (Grill et al. 2020): an online encoder + predictor regresses an EMA target's projections.

Symmetric: each view's prediction targets the other view's projection; i-Mix mixes each view.
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastkit.objectives import byol_loss
from contrastkit.pipelines.methods.base import (
    MethodOutput,
    SelfDistillationMethod,
    stacked_label_weights,
    two_views,
)


class BYOL(SelfDistillationMethod):
    """loss = byol_loss(p1, z2', t1) + byol_loss(p2, z1', t2): the two directions summed, as
    solo-learn's BYOL does.

    p = predictor(projection(view)) from the online network; z' = the target network's
    projection of the other view (EMA of the online encoder with momentum rising from
    method.momentum to method.momentum_final on a cosine), no gradient. Both views go through
    each network (and the predictor) in one forward, one BatchNorm batch of 2N, or with
    method.separate_forwards in one forward per view, as solo-learn does. With i-Mix each view
    is mixed within the batch and t1, t2 are its virtual labels; the target network sees the
    clean views.
    """

    name = "byol"
    supports_imix = True
    default_augment = "byol_views"
    default_temperature = None  # a regression, no softmax
    default_momentum = 0.996
    default_final_momentum = 1.0  # rises to 1 on a cosine (Grill et al. 2020)

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
        with torch.no_grad():
            _, target_projections = self.encode(self.teacher, [view2, view1])
        z2, z1 = target_projections.chunk(2)
        # targets made by self.mix_both: not value-checked (that check is a host sync)
        loss = byol_loss(p1, z2, targets1, validate_targets=False) + byol_loss(
            p2, z1, targets2, validate_targets=False
        )
        n = view1.shape[0]
        weights = stacked_label_weights(targets1, targets2, n=n, device=view1.device)
        return MethodOutput(loss, features.detach(), weights)
