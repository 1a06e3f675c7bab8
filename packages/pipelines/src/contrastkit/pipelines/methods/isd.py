"""ISD (Tejankar et al. 2021): the student mimics an EMA teacher's similarities to a queue of anchors.

The teacher sees the weak view, the student (encoder + predictor) the strong one; ISD-plus is
the temperature preset (T_s, T_t) = (0.1, 0.01).
"""

from __future__ import annotations

import torch
from torch import Tensor

from contrastkit.backbones import PredictionHead
from contrastkit.objectives import MemoryQueue, MomentumTeacher, isd_loss
from contrastkit.pipelines.config import PretrainConfig
from contrastkit.pipelines.methods.base import (
    MethodOutput,
    PretrainMethod,
    shuffled_key_forward,
    two_views,
)


class ISD(PretrainMethod):
    """loss = KL(softmax(t @ queue.T / T_t) || softmax(s @ queue.T / T_s)), then t is enqueued.

    views[0] (weak) -> teacher projection t, no gradient (shuffle-BN across ranks as in MoCo);
    views[1] (strong) -> student projection -> predictor -> s. The teacher is the EMA of the
    student's backbone + projection (not the predictor).
    """

    name = "isd"

    def __init__(self, backbone: torch.nn.Module, config: PretrainConfig) -> None:
        super().__init__(backbone, config)
        dim = config.model.projection_dim
        self.predictor = PredictionHead(dim, config.model.prediction_hidden_dim, dim)
        self.teacher = MomentumTeacher(self.encoder)
        self.queue = MemoryQueue(config.method.queue_size, dim, seed=config.train.seed)

    def forward(
        self, views: list[Tensor], *, step: int, generator: torch.Generator | None = None
    ) -> MethodOutput:
        weak, strong = two_views(views)
        features, projections = self.encoder(strong)
        student = self.predictor(projections)
        teacher = shuffled_key_forward(self.teacher, weak, self.key_seed(step))
        method = self.config.method
        loss = isd_loss(
            student,
            teacher,
            self.queue.keys,
            student_temperature=method.student_temperature,
            teacher_temperature=method.teacher_temperature,
        )
        self.queue.enqueue(teacher)
        return MethodOutput(loss, features.detach())
