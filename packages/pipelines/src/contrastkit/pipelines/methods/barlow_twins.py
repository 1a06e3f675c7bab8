"""Barlow Twins (Zbontar et al. 2021): the cross-correlation of the two views' projections -> identity.

Batch-standardised projections, no predictor, no teacher, no negatives. i-Mix does not apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from contrastkit.objectives import barlow_twins_loss
from contrastkit.pipelines.methods.base import MethodOutput, PretrainMethod, two_views


class BarlowTwins(PretrainMethod):
    """loss = barlow_twins_loss(z1, z2, method.lambda_offdiag, method.scale_loss)
    = scale_loss * (sum_i (1 - c_ii)^2 + lambda_offdiag * sum_{i != j} c_ij^2),

    c the (D, D) cross-correlation of the two views' projections, each standardised per feature
    over the (global) batch, as solo-learn's `barlow_loss_func(z1, z2, lamb, scale_loss)`
    (solo/losses/barlow.py). Both views go through the encoder in one forward, one BatchNorm
    batch of 2N, or with method.separate_forwards one forward per view, as solo-learn does.
    Defaults are the paper's (facebookresearch/barlowtwins main.py: lambda 0.0051, no loss
    scale); solo-learn's CIFAR recipe scales the loss by 0.1.
    """

    name = "barlow_twins"
    supports_imix = False
    imix_unsupported_reason = (
        "Barlow Twins compares batch statistics of the two views (a cross-correlation matrix "
        "of standardised features), not each sample with its own positive, so there is no "
        "per-sample target for i-Mix's virtual labels to mix"
    )
    default_augment = "byol_views"  # facebookresearch/barlowtwins main.py: BYOL's asymmetric views
    default_temperature = None  # no softmax
    method_defaults: ClassVar[Mapping[str, Any]] = {"lambda_offdiag": 0.0051, "scale_loss": 1.0}

    @classmethod
    def preset(cls, method: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The projector has three Linear layers (facebookresearch/barlowtwins main.py
        `--projector 8192-8192-8192`, solo-learn solo/methods/barlow_twins.py); the config's
        widths stand."""
        return {"model": {"projection_layers": 3}}

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
        method = self.method_config
        loss = barlow_twins_loss(
            z1, z2, lambda_offdiag=method.lambda_offdiag, scale_loss=method.scale_loss
        )
        return MethodOutput(loss, features.detach())
