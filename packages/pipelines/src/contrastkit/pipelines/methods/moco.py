"""MoCo v2 (He et al. 2020; Chen et al. 2020): queries against an EMA key encoder's keys and a queue.

Shuffle-BN across processes for the keys (see `shuffled_key_forward`); i-Mix on the queries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from contrastkit.objectives import MemoryQueue, MomentumTeacher, moco_loss
from contrastkit.pipelines.methods.base import (
    MethodOutput,
    PretrainMethod,
    shuffled_key_forward,
    two_views,
)

if TYPE_CHECKING:
    from contrastkit.pipelines.config import MethodConfig, ModelConfig


class MoCo(PretrainMethod):
    """loss = moco_loss(q, k, queue, method.temperature, targets), then the keys are enqueued.

    q: projection of view 1 by the student (mixed by i-Mix when on); k: projection of view 2 by
    the momentum encoder (EMA of the student, momentum method.momentum), no gradient. The queue
    holds the last method.queue_size keys of all ranks.
    """

    name = "moco"
    supports_imix = True
    default_augment = "mocov2_views"
    default_temperature = 0.2
    default_momentum = 0.99
    default_final_momentum = None  # constant momentum

    def __init__(
        self, backbone: torch.nn.Module, method: MethodConfig, model: ModelConfig, *, seed: int = 0
    ) -> None:
        super().__init__(backbone, method, model, seed=seed)
        self.teacher = MomentumTeacher(self.encoder)
        self.queue = MemoryQueue(method.queue_size, model.projection_dim, seed=seed)

    def forward(
        self, views: list[Tensor], *, step: int, generator: torch.Generator | None = None
    ) -> MethodOutput:
        view1, view2 = two_views(views)
        queries, targets = self.mix(view1, generator)
        features, q = self.encoder(queries)
        k = shuffled_key_forward(self.teacher, view2, self.key_seed(step))
        loss = moco_loss(
            q, k, self.queue.keys, temperature=self.method_config.temperature, targets=targets
        )
        self.queue.enqueue(k)
        return MethodOutput(loss, features.detach(), targets)
