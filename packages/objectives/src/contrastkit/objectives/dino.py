"""DINO (Caron et al. 2021): self-distillation with a centred, sharpened teacher over multi-crop views.

The pure loss `dino_loss`, the teacher-temperature warm-up `dino_teacher_temperature`, and `DINOLoss`,
which holds the teacher centre as a buffer (in `state_dict`) and updates it across ranks.
Follows facebookresearch/dino main_dino.py (`DINOLoss`, commit 04c0ad95): student_temp=0.1,
center_momentum=0.9, warmup_teacher_temp=0.04, teacher_temp=0.04, warmup_teacher_temp_epochs=0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from contrastkit.objectives._multicrop import check_crops, cross_crop_cross_entropy
from contrastkit.objectives._validation import (
    autocast_disabled,
    check_count,
    check_same_device,
    check_temperature,
    check_unit_interval,
    compute_dtype,
)
from contrastkit.objectives.distributed import all_reduce_no_grad


def _check_center(center: object, num_prototypes: int, device: torch.device) -> Tensor:
    if not isinstance(center, Tensor):
        raise ValueError(f"center must be a torch.Tensor, got {type(center).__name__}")
    if tuple(center.shape) not in ((1, num_prototypes), (num_prototypes,)):
        raise ValueError(
            f"center must have shape (1, K) = (1, {num_prototypes}) to match the outputs, "
            f"got shape {tuple(center.shape)}"
        )
    if not center.is_floating_point():
        raise ValueError(f"center must have a floating dtype, got {center.dtype}")
    if center.device != device:
        raise ValueError(
            f"center and teacher_out must be on the same device, got {center.device} and {device}"
        )
    return center.reshape(1, num_prototypes)


def dino_loss(
    student_out: Sequence[Tensor],
    teacher_out: Sequence[Tensor],
    center: Tensor,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
) -> Tensor:
    """DINO cross-entropy of the centred, sharpened teacher against the student, over all crop pairs.

    student_out: S >= 2 tensors (N, K), the student head's logits for every crop, the T global crops
    first (DINO: 2 global + local crops). teacher_out: T tensors (N, K), the teacher's logits for the
    global crops, in the same order (1 <= T <= S); detached here. center: (1, K) (or (K,)), subtracted
    from the teacher logits (`DINOLoss` keeps it). Row n of every crop is the same image.

    `q_t = softmax((teacher_t - center) / teacher_temperature)`,
    `log p_v = log_softmax(student_v / student_temperature)`; the loss is the mean over the
    T * (S - 1) pairs (t, v) with v != t of `mean_n -sum_k q_t[n, k] log p_v[n, k]` (a teacher crop
    is never compared with its own student crop), as facebookresearch/dino's `DINOLoss.forward`.
    Temperatures > 0; DINO's student uses 0.1, its teacher 0.04 (up to 0.07, see
    `dino_teacher_temperature`).

    Distributed: no communication (per-sample terms, mean over this rank's N rows; DDP averages
    gradients). The centre is updated from all ranks by `DINOLoss.update_center`.

    Returns a float32 scalar (float64 if an input is float64).
    """
    students = check_crops("student_out", student_out)
    teachers = check_crops("teacher_out", teacher_out)
    if len(students) < 2:
        raise ValueError(
            "student_out must hold at least 2 crops (a teacher crop is never compared with its own "
            f"student crop), got {len(students)}"
        )
    if len(teachers) > len(students):
        raise ValueError(
            "teacher_out must not hold more crops than student_out (the teacher crops are the first "
            f"student crops), got {len(teachers)} teacher and {len(students)} student crops"
        )
    check_same_device("student_out[0]", students[0], "teacher_out[0]", teachers[0])
    if teachers[0].shape != students[0].shape:
        raise ValueError(
            "teacher_out and student_out crops must have the same shape (N, K), got "
            f"{tuple(teachers[0].shape)} and {tuple(students[0].shape)}"
        )
    center = _check_center(center, students[0].shape[1], teachers[0].device)
    student_temperature = check_temperature("student_temperature", student_temperature)
    teacher_temperature = check_temperature("teacher_temperature", teacher_temperature)
    dtype = compute_dtype(*students, *teachers, center)
    with autocast_disabled(students[0].device):
        with torch.no_grad():
            shift = center.detach().to(dtype)
            targets = [
                torch.softmax((t.detach().to(dtype) - shift) / teacher_temperature, dim=1)
                for t in teachers
            ]
        log_probs = [torch.log_softmax(s.to(dtype) / student_temperature, dim=1) for s in students]
        return cross_crop_cross_entropy(targets, range(len(targets)), log_probs)


def dino_teacher_temperature(
    epoch: int,
    warmup_teacher_temperature: float = 0.04,
    teacher_temperature: float = 0.04,
    warmup_epochs: int = 0,
) -> float:
    """DINO's teacher temperature at `epoch`: linear warm-up, then constant.

    During the first `warmup_epochs` epochs the value goes from `warmup_teacher_temperature` (epoch
    0) to `teacher_temperature` (epoch warmup_epochs - 1) in equal steps, exactly as the original's
    `np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs)`; from epoch
    `warmup_epochs` on it is `teacher_temperature`. Defaults are facebookresearch/dino's argparse
    defaults (0.04, 0.04, 0 warm-up epochs; its help text suggests 30 warm-up epochs and warns that
    teacher temperatures above 0.07 are unstable). solo-learn's DINO defaults are 0.04 -> 0.07 with
    0 warm-up epochs (solo/methods/dino.py), i.e. 0.07 throughout. The original's schedule is an
    array of `epochs` entries (an IndexError past the last); this stays constant.
    """
    epoch = check_count("epoch", epoch, 0)
    start = check_temperature("warmup_teacher_temperature", warmup_teacher_temperature)
    end = check_temperature("teacher_temperature", teacher_temperature)
    warmup_epochs = check_count("warmup_epochs", warmup_epochs, 0)
    if epoch >= warmup_epochs:
        return end
    if warmup_epochs == 1:
        return start  # linspace(start, end, 1) == [start]
    if epoch == warmup_epochs - 1:
        return end  # linspace ends exactly on its endpoint
    return start + epoch * ((end - start) / (warmup_epochs - 1))


class DINOLoss(nn.Module):
    """`dino_loss` with DINO's teacher centre as state and its teacher-temperature schedule.

    Buffer (in `state_dict`): `center` (1, out_dim) float32, zeros at start. forward(student_out,
    teacher_out, epoch) computes the loss with the current centre and the temperature of `epoch`
    (see `dino_teacher_temperature`), then, in training mode, calls `update_center(teacher_out)`,
    as the original's forward does. In eval mode the centre is left as it is.

    Distributed: every rank must call forward (or `update_center`) at the same steps: the centre
    update all-reduces the teacher outputs' sum.
    """

    center: Tensor

    def __init__(
        self,
        out_dim: int,
        warmup_teacher_temperature: float = 0.04,
        teacher_temperature: float = 0.04,
        warmup_epochs: int = 0,
        student_temperature: float = 0.1,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        self.out_dim = check_count("out_dim", out_dim, 1)
        self.warmup_teacher_temperature = check_temperature(
            "warmup_teacher_temperature", warmup_teacher_temperature
        )
        self.teacher_temperature = check_temperature("teacher_temperature", teacher_temperature)
        self.warmup_epochs = check_count("warmup_epochs", warmup_epochs, 0)
        self.student_temperature = check_temperature("student_temperature", student_temperature)
        self.center_momentum = check_unit_interval("center_momentum", center_momentum)
        self.register_buffer("center", torch.zeros(1, self.out_dim))

    def teacher_temperature_at(self, epoch: int) -> float:
        """The teacher temperature used at `epoch` (see `dino_teacher_temperature`)."""
        return dino_teacher_temperature(
            epoch, self.warmup_teacher_temperature, self.teacher_temperature, self.warmup_epochs
        )

    def forward(
        self, student_out: Sequence[Tensor], teacher_out: Sequence[Tensor], epoch: int
    ) -> Tensor:
        loss = dino_loss(
            student_out,
            teacher_out,
            self.center,
            self.student_temperature,
            self.teacher_temperature_at(epoch),
        )
        if self.training:
            self.update_center(teacher_out)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: Sequence[Tensor]) -> None:
        """`center = m * center + (1 - m) * mean of every teacher row of every crop on every rank`.

        teacher_out: T tensors (N, out_dim). The sum and the row count are all-reduced (one call),
        so ranks may hold different N; the original divides by N * T * world_size.
        """
        teachers = check_crops("teacher_out", teacher_out, f"(N, {self.out_dim})")
        if teachers[0].shape[1] != self.out_dim:
            raise ValueError(
                f"teacher_out crops must have shape (N, {self.out_dim}) to match out_dim, "
                f"got {tuple(teachers[0].shape)}"
            )
        check_same_device("teacher_out[0]", teachers[0], "center", self.center)
        dtype = compute_dtype(self.center)
        with autocast_disabled(self.center.device):
            rows = sum(t.shape[0] for t in teachers)
            summed = torch.stack([t.detach().to(dtype).sum(dim=0) for t in teachers]).sum(dim=0)
            # [sum over rows (out_dim,), row count]: one all_reduce for both.
            packed = torch.cat([summed, summed.new_full((1,), float(rows))])
            packed = all_reduce_no_grad(packed)
            batch_center = packed[:-1] / packed[-1]
            self.center.mul_(self.center_momentum).add_(
                batch_center.to(self.center.dtype).unsqueeze(0), alpha=1 - self.center_momentum
            )

    def extra_repr(self) -> str:
        return (
            f"out_dim={self.out_dim}, warmup_teacher_temperature={self.warmup_teacher_temperature}, "
            f"teacher_temperature={self.teacher_temperature}, warmup_epochs={self.warmup_epochs}, "
            f"student_temperature={self.student_temperature}, "
            f"center_momentum={self.center_momentum}"
        )
