"""Momentum (EMA) teachers: the in-place EMA step, BYOL's cosine momentum schedule, and a frozen copy.

Used by MoCo's key encoder, BYOL's target network and ISD's teacher.
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import Any

import torch
from torch import nn

from contrastkit.objectives._validation import check_count, check_unit_interval


def _matched_parameters(
    teacher: nn.Module, student: nn.Module
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    teacher_named = list(teacher.named_parameters())
    student_named = list(student.named_parameters())
    teacher_spec = [(name, tuple(p.shape)) for name, p in teacher_named]
    student_spec = [(name, tuple(p.shape)) for name, p in student_named]
    if teacher_spec != student_spec:
        mismatch = next(
            (
                f"teacher {t} vs student {s}"
                for t, s in zip(teacher_spec, student_spec, strict=False)
                if t != s
            ),
            f"teacher has {len(teacher_spec)} parameters, student has {len(student_spec)}",
        )
        raise ValueError(
            f"teacher and student parameters must match in names and shapes, first difference: {mismatch}"
        )
    return [p for _, p in teacher_named], [p for _, p in student_named]


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """In place, for every parameter: `t = momentum * t + (1 - momentum) * s`.

    Parameters only: buffers (e.g. BatchNorm running statistics) are left untouched; copy or
    average them yourself if your method needs that. momentum: in [0, 1] (1 keeps the teacher,
    0 copies the student). Raises ValueError if the two modules' parameters differ in names or
    shapes. Same-device, same-dtype pairs are updated with one fused foreach call.
    """
    momentum = check_unit_interval("momentum", momentum)
    teacher_params, student_params = _matched_parameters(teacher, student)
    weight = 1.0 - momentum  # lerp(t, s, w) = t + w (s - t) = m t + (1 - m) s
    fused_t, fused_s = [], []
    for t, s in zip(teacher_params, student_params, strict=True):
        if t.device == s.device and t.dtype == s.dtype:
            fused_t.append(t)
            fused_s.append(s)
        else:
            t.lerp_(s.to(device=t.device, dtype=t.dtype), weight)
    if fused_t:
        torch._foreach_lerp_(fused_t, fused_s, weight)


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """BYOL's schedule (Grill et al. 2020): momentum rises from `base` at step 0 to `final` at `total_steps`.

    `m = final - (final - base) * (cos(pi * step / total_steps) + 1) / 2`.
    step: in [0, total_steps]; total_steps: >= 1; base, final: in [0, 1].
    """
    total_steps = check_count("total_steps", total_steps, 1)
    if (
        isinstance(step, bool)
        or not isinstance(step, numbers.Integral)
        or not 0 <= step <= total_steps
    ):
        raise ValueError(f"step must be an int in [0, total_steps={total_steps}], got {step!r}")
    base = check_unit_interval("base", base)
    final = check_unit_interval("final", final)
    return final - (final - base) * (math.cos(math.pi * step / total_steps) + 1) / 2


class MomentumTeacher(nn.Module):
    """A frozen deep copy of `student`, moved towards it by `update` (EMA of the parameters).

    The copy's parameters have requires_grad=False; its weights and buffers are in this module's
    `state_dict` (under `module.`). Calling it runs the copy. Train/eval mode is not forced: it
    follows `.train()` / `.eval()` like any submodule (MoCo and BYOL run their teachers in train
    mode, so BatchNorm uses batch statistics). Buffers are not averaged by `update`.
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        if not isinstance(student, nn.Module):
            raise ValueError(f"student must be a torch.nn.Module, got {type(student).__name__}")
        self.module = copy.deepcopy(student)
        self.module.requires_grad_(False)

    def update(self, student: nn.Module, momentum: float) -> None:
        """`teacher = momentum * teacher + (1 - momentum) * student`, parameters only (see `ema_update`)."""
        ema_update(self.module, student, momentum)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)
