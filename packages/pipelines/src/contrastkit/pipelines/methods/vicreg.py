"""VICReg (Bardes et al. 2022): invariance between the two views, variance and covariance regularisers.

Raw projections (the "expander"), no predictor, no teacher, no negatives. i-Mix does not apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from contrastkit.objectives import vicreg_loss
from contrastkit.pipelines.methods.base import MethodOutput, PretrainMethod, two_views


class VICReg(PretrainMethod):
    """loss = vicreg_loss(z1, z2, method.sim_coeff, method.std_coeff, method.cov_coeff)
    = sim_coeff * MSE(z1, z2) + std_coeff * variance + cov_coeff * covariance.

    The variance term is the two views' hinge on each feature's std, AVERAGED over the views, as
    facebookresearch/vicreg main_vicreg.py; solo-learn (solo/losses/vicreg.py) SUMS them, so its
    `var_loss_weight` w is `std_coeff = 2 * w` here (its CIFAR recipe's 25 is 50). Variance and
    covariance are statistics of the global batch. Both views go through the encoder in one
    forward, one BatchNorm batch of 2N, or with method.separate_forwards one forward per view, as
    solo-learn does. Defaults are the original's coefficients 25 / 25 / 1.
    """

    name = "vicreg"
    supports_imix = False
    imix_unsupported_reason = (
        "VICReg's variance and covariance terms are statistics of the batch, which mixing "
        "changes rather than relabels, and its invariance term regresses each sample on its "
        "own other view, with no candidates for i-Mix's virtual labels to weight"
    )
    default_augment = "byol_views"  # facebookresearch/vicreg augmentations.py: BYOL's views
    default_temperature = None  # no softmax
    method_defaults: ClassVar[Mapping[str, Any]] = {
        "sim_coeff": 25.0,
        "std_coeff": 25.0,
        "cov_coeff": 1.0,
    }

    @classmethod
    def preset(cls, method: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The expander has three Linear layers (facebookresearch/vicreg main_vicreg.py
        `--mlp 8192-8192-8192`, solo-learn solo/methods/vicreg.py); the config's widths stand."""
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
        loss = vicreg_loss(
            z1,
            z2,
            sim_coeff=method.sim_coeff,
            std_coeff=method.std_coeff,
            cov_coeff=method.cov_coeff,
        )
        return MethodOutput(loss, features.detach())
