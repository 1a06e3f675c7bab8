"""SimCLR (Chen et al. 2020): NT-Xent between the projections of two views of each image.

Both views go through the encoder in one forward (one BatchNorm batch of 2N samples), or with
method.separate_forwards in one forward each (solo-learn's SimCLR: a BatchNorm batch per view).
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastkit.objectives import nt_xent_loss
from contrastkit.pipelines.methods.base import MethodOutput, PretrainMethod, two_views


class SimCLR(PretrainMethod):
    """loss = nt_xent_loss(z1, z2, method.temperature); negatives from the global batch across ranks."""

    name = "simclr"
    supports_imix = False
    default_augment = "simclr_views"
    default_temperature = 0.5

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
        features, projections = self.encode(self.encoder, [view1, view2])
        z1, z2 = projections.chunk(2)
        loss = nt_xent_loss(z1, z2, temperature=self.method_config.temperature)
        return MethodOutput(loss, features.detach())
