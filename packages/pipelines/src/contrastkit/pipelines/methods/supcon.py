"""SupCon (Khosla et al. 2020): supervised contrastive learning, the batch's class labels define
the positives: every view of every sample of the same class.

Alone (pretrain.py) it is a supervised pretraining; in joint training (joint.py) it is the
SSL term beside the cross-entropy, with the same labels. Any number of views: multi-crop views
are forwarded one BatchNorm batch per resolution (`PretrainMethod.encode`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from contrastkit.objectives import supcon_loss
from contrastkit.pipelines.methods.base import MethodOutput, PretrainMethod


class SupCon(PretrainMethod):
    """loss = supcon_loss([z_1, ..., z_V], labels, method.temperature, method.base_temperature).

    z_v = projection of view v (L2-normalised in the loss); every one of the V*N embeddings is
    an anchor whose positives are the other embeddings of its class (its own other views
    included) and whose contrast set is every other embedding of the global batch (all ranks):
    SupContrast's L_out, scaled by T / T_base. labels: the batch's (N,) int64 classes, which the
    training loop passes (pretrain and joint); a forward without labels raises ValueError.

    solo-learn's SupCon (`simclr_loss_func` with the labels as indexes) computes the paper's
    L_in instead (the sum over positives inside the log) without the T / T_base factor;
    base_temperature = temperature removes the factor (the CIFAR recipe does), L_in vs L_out
    remains a difference (RECIPES.md).

    The online classifier reads the features of the first two (global) views. The projector is
    Linear -> ReLU -> Linear (the preset: no BatchNorm, as SupContrast's and solo-learn's head).
    """

    name = "supcon"
    supports_imix = False
    imix_unsupported_reason: ClassVar[str] = (
        "SupCon's positives are all samples of the anchor's class, given by the labels; i-Mix's "
        "virtual labels name one positive per sample, so mixing has no defined target here"
    )
    default_augment = "simclr_views"  # SupContrast and solo-learn: SimCLR's views
    default_temperature = 0.1  # SupContrast's CIFAR command (--temp 0.1)
    method_defaults: ClassVar[Mapping[str, Any]] = {"base_temperature": 0.07}  # SupContrast

    @classmethod
    def preset(cls, method: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """SupCon's projector has no BatchNorm: Linear -> ReLU -> Linear."""
        return {"model": {"projection_batch_norm": False}}

    def forward(
        self,
        views: list[Tensor],
        *,
        step: int,
        epoch: int = 0,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MethodOutput:
        """views: V >= 1 batches of the same N samples (sizes may differ: multi-crop);
        labels: (N,) int64 class labels of the batch (required)."""
        if labels is None:
            raise ValueError(
                "method supcon needs the batch's class labels (labels=None): its positives are "
                "the samples of each class; run it on a labelled dataset"
            )
        if not views:
            raise ValueError("method supcon needs at least 1 view, got 0")
        n = views[0].shape[0]
        features, projections = self.encode(self.encoder, views)
        method = self.method_config
        loss = supcon_loss(
            list(projections.split(n)),
            labels,
            temperature=method.temperature,
            base_temperature=method.base_temperature,
        )
        return MethodOutput(loss, features[: min(len(views), 2) * n].detach())
