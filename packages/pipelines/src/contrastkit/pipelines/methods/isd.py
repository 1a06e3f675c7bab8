"""ISD (Tejankar et al. 2021): the student mimics an EMA teacher's similarities to a queue of anchors.

The teacher sees the weak view, the student (encoder + predictor) the strong one. `method.isd_plus`
switches the whole recipe to ISD-plus: a projection head, other predictor sizes, EMA momentum,
temperatures and optimizer (see `ISD.preset`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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

    views[0] (weak) -> teacher embedding t, no gradient (shuffle-BN across ranks as in MoCo);
    views[1] (strong) -> student embedding -> predictor -> s. The embedding is the projection,
    or with model.projection_layers = 0 (the ISD preset, `train_isd_r18.py`) the backbone's
    features, so the queue holds the teacher's L2-normalised backbone features. The teacher is
    the EMA of the student's backbone + projection (not the predictor). Each network sees one
    view in its own forward, so method.separate_forwards changes nothing here.
    """

    name = "isd"
    supports_imix = False
    default_augment = "isd_views"
    default_temperature = None  # a student and a teacher temperature instead
    default_momentum = 0.999  # train_isd_r18.py --momentum
    default_final_momentum = None  # constant momentum
    default_student_teacher_temperatures = (0.02, 0.02)  # train_isd_r18.py --temp, both networks
    isd_plus_temperatures = (0.1, 0.01)  # train_isd_plus.py --temp_s / --temp_t

    @classmethod
    def preset(cls, method: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """ISD (UMBCvision/ISD train_isd_r18.py) or, with `isd_plus: true`, ISD-plus
        (train_isd_plus.py and its README command): heads, optimizer and schedule, and for
        ISD-plus its EMA momentum (ISD's 0.999 is `default_momentum`).

        Sizes follow the originals for a 512-feature backbone (ResNet-18, MyResNet): ISD has no
        projection head (the teacher's backbone features are the queue's keys) and a
        512 -> 512 -> 512 predictor; ISD-plus projects 512 -> 1024 -> 128 (feat -> 2 feat ->
        feat / 4) and predicts 128 -> 1024 -> 128. The queue size and the run length are the
        config's (the originals' 128,000 keys and 130 / 200 epochs are ImageNet-sized).
        """
        sgd = {"name": "sgd", "momentum": 0.9, "weight_decay": 1e-4, "exclude_bias_and_norm": False}
        if method.get("isd_plus"):
            return {
                "method": {"momentum": 0.99},
                "model": {
                    "projection_layers": 2,
                    "projection_hidden_dim": 1024,
                    "projection_dim": 128,
                    "projection_batch_norm": True,
                    "prediction_hidden_dim": 1024,
                },
                "optimizer": {**sgd, "lr": 0.05, "schedule": "warmup_cosine"},
            }
        return {
            "model": {"projection_layers": 0, "prediction_hidden_dim": 512},
            "optimizer": {
                **sgd,
                "lr": 0.01,
                "schedule": "step",
                "lr_decay_epochs": [90, 120],
                "lr_decay_factor": 0.2,
            },
        }

    def __init__(
        self, backbone: torch.nn.Module, method: MethodConfig, model: ModelConfig, *, seed: int = 0
    ) -> None:
        super().__init__(backbone, method, model, seed=seed)
        self.queue = MemoryQueue(method.queue_size, self.embedding_dim, seed=seed)

    def forward(
        self,
        views: list[Tensor],
        *,
        step: int,
        epoch: int = 0,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
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
