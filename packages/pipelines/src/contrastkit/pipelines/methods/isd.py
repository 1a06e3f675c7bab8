"""ISD (Tejankar et al. 2021): the student mimics an EMA teacher's similarities to a queue of anchors.

The teacher sees the weak view, the student (encoder + predictor) the strong one; ISD-plus is
the temperature preset (T_s, T_t) = (0.1, 0.01).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from contrastkit.objectives import MemoryQueue, isd_loss
from contrastkit.pipelines.methods.base import (
    MethodOutput,
    SelfDistillationMethod,
    shuffled_key_forward,
    two_views,
)

if TYPE_CHECKING:
    from contrastkit.pipelines.config import MethodConfig, ModelConfig


class ISD(SelfDistillationMethod):
    """loss = KL(softmax(t @ queue.T / T_t) || softmax(s @ queue.T / T_s)), then t is enqueued.

    views[0] (weak) -> teacher projection t, no gradient (shuffle-BN across ranks as in MoCo);
    views[1] (strong) -> student projection -> predictor -> s. The teacher is the EMA of the
    student's backbone + projection (not the predictor).
    """

    name = "isd"
    supports_imix = False
    default_augment = "isd_views"
    default_temperature = None  # a student and a teacher temperature instead
    default_momentum = 0.99
    default_final_momentum = None  # constant momentum
    default_student_teacher_temperatures = (0.02, 0.02)  # the ISD paper
    isd_plus_temperatures = (0.1, 0.01)  # ISD-plus

    def __init__(
        self, backbone: torch.nn.Module, method: MethodConfig, model: ModelConfig, *, seed: int = 0
    ) -> None:
        super().__init__(backbone, method, model, seed=seed)
        self.queue = MemoryQueue(method.queue_size, model.projection_dim, seed=seed)

    def forward(
        self, views: list[Tensor], *, step: int, generator: torch.Generator | None = None
    ) -> MethodOutput:
        weak, strong = two_views(views)
        features, projections = self.encoder(strong)
        student = self.predictor(projections)
        teacher = shuffled_key_forward(self.teacher, weak, self.key_seed(step))
        method = self.method_config
        loss = isd_loss(
            student,
            teacher,
            self.queue.keys,
            student_temperature=method.student_temperature,
            teacher_temperature=method.teacher_temperature,
        )
        self.queue.enqueue(teacher)
        return MethodOutput(loss, features.detach())
