"""SwAV (Caron et al. 2020): each crop predicts the Sinkhorn-Knopp cluster codes of the other crops.

Encoder = backbone + projection head; unit embeddings are scored against weight-normalised
prototypes; codes come from the 2 global crops (with a queue of past embeddings later in training).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastkit.backbones.dino_head import WeightNormLinear
from contrastkit.objectives import SwAVLoss, SwAVQueue
from contrastkit.objectives.distributed import world
from contrastkit.pipelines.methods.base import MethodOutput, PretrainMethod, global_and_local_crops

if TYPE_CHECKING:
    from contrastkit.pipelines.config import MethodConfig, ModelConfig


class SwAV(PretrainMethod):
    """loss = SwAVLoss(prototype scores of every crop, queue scores): swapped prediction of codes.

    z = L2-normalised projection of each crop, scores = z @ prototypes.T with `prototypes` a
    `WeightNormLinear` whose rows keep unit norm (solo-learn's `weight_norm` prototypes with
    weight_g fixed at 1: normalised in every forward, the gradient passing through the
    normalisation; facebookresearch/swav instead renormalises the weights in place before each
    step). The codes of the 2 global crops are `sinkhorn_knopp` (method.sinkhorn_epsilon,
    method.sinkhorn_iterations) over the global batch, with the queue's rows from epoch
    method.queue_start_epoch once the queue is full; every crop predicts the codes of the other
    global crop(s) at method.temperature. The global crops' embeddings enter the queue after the
    loss from the first step on (as solo-learn); it holds method.queue_size // world size rows per
    crop on each process. The prototypes get no step during the first
    method.freeze_prototypes_epochs epochs. The online classifier reads the global crops' features.
    """

    name = "swav"
    supports_imix = False
    imix_unsupported_reason = (
        "SwAV's targets are Sinkhorn cluster codes shared by the views of a sample, not a "
        "per-sample positive that i-Mix's virtual labels could mix"
    )
    default_augment = "swav_views"
    default_temperature = 0.1  # solo-learn and facebookresearch/swav
    method_defaults: Mapping[str, Any] = {  # solo-learn solo/methods/swav.py defaults
        "num_prototypes": 3000,
        "sinkhorn_epsilon": 0.05,
        "sinkhorn_iterations": 3,
        "freeze_prototypes_epochs": 1,
        "queue_start_epoch": 15,
    }

    def __init__(
        self, backbone: nn.Module, method: MethodConfig, model: ModelConfig, *, seed: int = 0
    ) -> None:
        super().__init__(backbone, method, model, seed=seed)
        self.prototypes = WeightNormLinear(self.embedding_dim, method.num_prototypes)
        self.swav_loss = SwAVLoss(
            temperature=method.temperature,
            epsilon=method.sinkhorn_epsilon,
            iterations=method.sinkhorn_iterations,
            crops_for_assign=(0, 1),
        )
        _, world_size = world()
        if method.queue_size < world_size:
            raise ValueError(
                f"method.queue_size is divided among the {world_size} processes and must be at "
                f"least {world_size}, got {method.queue_size}"
            )
        self.queue = SwAVQueue(method.queue_size // world_size, self.embedding_dim, crops=2)

    def forward(
        self,
        views: list[Tensor],
        *,
        step: int,
        epoch: int = 0,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MethodOutput:
        crops = global_and_local_crops(views)
        n = crops[0].shape[0]
        features, projections = self.encode(self.encoder, crops)
        z = F.normalize(projections, dim=1)
        scores = self.prototypes(z)
        queue_scores = None
        if epoch >= self.method_config.queue_start_epoch:
            queue_scores = self.queue.scores(self.prototypes.weight)  # None until full
        loss = self.swav_loss(list(scores.split(n)), queue_scores)
        self.queue.push([z[:n].detach(), z[n : 2 * n].detach()])
        return MethodOutput(loss, features[: 2 * n].detach())

    def after_backward(self, epoch: int) -> None:
        """During the first method.freeze_prototypes_epochs epochs the prototypes get no step:
        their gradients are dropped (an optimizer skips parameters whose grad is None)."""
        if epoch < self.method_config.freeze_prototypes_epochs:
            for parameter in self.prototypes.parameters():
                parameter.grad = None
