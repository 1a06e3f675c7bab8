"""DINO (Caron et al. 2021): a student matches the centred, sharpened outputs of its EMA teacher.

Student and teacher are each backbone + DINO head (MLP -> L2-normalised bottleneck -> weight-
normalised prototypes); the teacher sees the 2 global crops, the student every crop (multi-crop).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from contrastkit.backbones.dino_head import DINOHead
from contrastkit.objectives import DINOLoss, MomentumTeacher
from contrastkit.pipelines.methods.base import MethodOutput, PretrainMethod, global_and_local_crops

if TYPE_CHECKING:
    from contrastkit.pipelines.config import MethodConfig, ModelConfig


class DINO(PretrainMethod):
    """loss = DINOLoss(student logits of every crop, teacher logits of the 2 global crops, epoch).

    The mean over the pairs (teacher crop t, student crop v != t) of the cross-entropy between
    softmax((teacher_t - center) / T_t) and softmax(student_v / T_s) (`dino_loss`), T_t from
    `dino_teacher_temperature(epoch)`; then the centre (a buffer, in the state_dict) moves
    towards the mean teacher output. The encoder is backbone + `DINOHead` (model.projection_*
    sizes, method.num_prototypes, method.norm_last_layer); the teacher is its EMA copy, head
    included (momentum from method.momentum to method.momentum_final on a cosine). As
    solo-learn's DINO (`on_after_backward`), the head's last layer gets no step during the first
    method.freeze_prototypes_epochs epochs (its freeze_last_layer). Crops of one resolution go
    through one forward (method.separate_forwards: one per crop, as solo-learn); the online
    classifier reads the global crops' features.
    """

    name = "dino"
    supports_imix = False
    imix_unsupported_reason = (
        "DINO's targets are the teacher's soft distributions over prototypes, not a per-sample "
        "positive that i-Mix's virtual labels could mix"
    )
    default_augment = "dino_views"
    default_temperature = None  # a student and a teacher temperature instead
    default_momentum = 0.996  # facebookresearch/dino main_dino.py --momentum_teacher
    default_final_momentum = 1.0  # rises to 1 on a cosine
    default_student_teacher_temperatures = (0.1, 0.07)  # solo-learn solo/methods/dino.py
    method_defaults: Mapping[str, Any] = {  # solo-learn solo/methods/dino.py defaults
        "num_prototypes": 4096,
        "norm_last_layer": True,
        "warmup_teacher_temperature": 0.04,
        "warmup_teacher_temperature_epochs": 0,
        "center_momentum": 0.9,
        "freeze_prototypes_epochs": 1,  # solo-learn's freeze_last_layer
    }

    @classmethod
    def preset(cls, method: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """DINO's head where the config leaves it out (facebookresearch/dino DINOHead defaults, as
        solo-learn): 3 layers, 2048 hidden, 256 bottleneck, no BatchNorm."""
        return {
            "model": {
                "projection_layers": 3,
                "projection_hidden_dim": 2048,
                "projection_dim": 256,
                "projection_batch_norm": False,
            }
        }

    def __init__(
        self, backbone: nn.Module, method: MethodConfig, model: ModelConfig, *, seed: int = 0
    ) -> None:
        super().__init__(backbone, method, model, seed=seed)
        self.teacher = MomentumTeacher(self.encoder)
        self.dino_loss = DINOLoss(
            out_dim=method.num_prototypes,
            warmup_teacher_temperature=method.warmup_teacher_temperature,
            teacher_temperature=method.teacher_temperature,
            warmup_epochs=method.warmup_teacher_temperature_epochs,
            student_temperature=method.student_temperature,
            center_momentum=method.center_momentum,
        )

    def projection_head(self, in_dim: int) -> nn.Module:
        """`DINOHead` on `in_dim` features, sized by the model section and method.num_prototypes."""
        model, method = self.model_config, self.method_config
        if model.projection_layers < 1:
            raise ValueError(
                "DINO's head needs model.projection_layers >= 1 (MLP layers before the "
                f"prototypes), got {model.projection_layers}"
            )
        if model.projection_output_batch_norm:
            raise ValueError(
                "DINO's head L2-normalises its bottleneck: model.projection_output_batch_norm "
                "must be false for method.name='dino'"
            )
        return DINOHead(
            in_dim,
            method.num_prototypes,
            hidden_dim=model.projection_hidden_dim,
            bottleneck_dim=model.projection_dim,
            num_layers=model.projection_layers,
            batch_norm=model.projection_batch_norm,
            norm_last_layer=method.norm_last_layer,
        )

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
        features, logits = self.encode(self.encoder, crops)
        with torch.no_grad():
            _, teacher_logits = self.encode(self.teacher, crops[:2])
        student_out = list(logits.split(n))
        loss = self.dino_loss(student_out, list(teacher_logits.split(n)), epoch)
        return MethodOutput(loss, features[: 2 * n].detach())

    def after_backward(self, epoch: int) -> None:
        """During the first method.freeze_prototypes_epochs epochs the head's last layer gets no
        step: its gradients are dropped (an optimizer skips parameters whose grad is None)."""
        if epoch < self.method_config.freeze_prototypes_epochs:
            for parameter in self.encoder.projection.last_layer.parameters():
                parameter.grad = None
