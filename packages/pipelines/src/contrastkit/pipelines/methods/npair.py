"""N-pair / in-batch InfoNCE as i-Mix uses it (Sohn 2016; Lee et al. 2021).

Queries from view 1 (mixed when i-Mix is on), keys from view 2, one shared encoder: one forward
of both (as i-Mix's builder.py), or one per view with method.separate_forwards.
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastkit.objectives import npair_loss
from contrastkit.pipelines.methods.base import (
    MethodOutput,
    PretrainMethod,
    stacked_label_weights,
    two_views,
)


class NPair(PretrainMethod):
    """loss = npair_loss(q, k, method.temperature, targets); keys gathered from every rank.

    With i-Mix (method.imix = mixup | cutmix) the query batch is mixed and `targets` are the
    virtual labels: mixed query i is positive to key i with weight lam_i and to key j(i) with
    1 - lam_i (i-Mix, Algorithm 1).
    """

    name = "npair"
    supports_imix = True
    default_augment = "simclr_views"
    default_temperature = 0.2

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
        queries, targets = self.mix(view1, generator)
        features, projections = self.encode(self.encoder, [queries, view2])
        q, k = projections.chunk(2)
        loss = npair_loss(
            q,
            k,
            temperature=self.method_config.temperature,
            targets=targets,
            validate_targets=False,  # made by self.mix: no host sync to check them
        )
        n = view1.shape[0]
        weights = stacked_label_weights(targets, None, n=n, device=view1.device)
        return MethodOutput(loss, features.detach(), weights)
