"""nn.Module wrappers around the functional losses: they hold the temperatures, nothing else.

Use them where a module is handier than a function (in an nn.ModuleDict, or to print a config).
"""

from __future__ import annotations

from torch import Tensor, nn

from contrastkit.objectives._validation import check_temperature
from contrastkit.objectives.functional import (
    byol_loss,
    isd_loss,
    moco_loss,
    npair_loss,
    nt_xent_loss,
)
from contrastkit.objectives.queue import MemoryQueue


def _queue_keys(queue: Tensor | MemoryQueue) -> Tensor:
    return queue.keys if isinstance(queue, MemoryQueue) else queue


class NTXentLoss(nn.Module):
    """`nt_xent_loss` with a fixed temperature; forward(z1 (N, D), z2 (N, D)) -> scalar."""

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        self.temperature = check_temperature("temperature", temperature)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return nt_xent_loss(z1, z2, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class NPairLoss(nn.Module):
    """`npair_loss` with a fixed temperature; forward(query, key, targets=None) -> scalar."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = check_temperature("temperature", temperature)

    def forward(self, query: Tensor, key: Tensor, targets: Tensor | None = None) -> Tensor:
        return npair_loss(query, key, self.temperature, targets)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class MoCoLoss(nn.Module):
    """`moco_loss` with a fixed temperature; forward(query, key, queue, targets=None) -> scalar.

    `queue` may be a (K, D) tensor or a MemoryQueue (its `keys` are used; enqueue is up to you).
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = check_temperature("temperature", temperature)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        queue: Tensor | MemoryQueue,
        targets: Tensor | None = None,
    ) -> Tensor:
        return moco_loss(query, key, _queue_keys(queue), self.temperature, targets)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class ISDLoss(nn.Module):
    """`isd_loss` with fixed temperatures; forward(student, teacher, queue) -> scalar.

    Defaults are ISD's (T_s = T_t = 0.02); ISD-plus is `ISDLoss(0.1, 0.01)`. `queue` may be a
    (K, D) tensor or a MemoryQueue.
    """

    def __init__(
        self, student_temperature: float = 0.02, teacher_temperature: float = 0.02
    ) -> None:
        super().__init__()
        self.student_temperature = check_temperature("student_temperature", student_temperature)
        self.teacher_temperature = check_temperature("teacher_temperature", teacher_temperature)

    def forward(self, student: Tensor, teacher: Tensor, queue: Tensor | MemoryQueue) -> Tensor:
        return isd_loss(
            student,
            teacher,
            _queue_keys(queue),
            self.student_temperature,
            self.teacher_temperature,
        )

    def extra_repr(self) -> str:
        return (
            f"student_temperature={self.student_temperature}, "
            f"teacher_temperature={self.teacher_temperature}"
        )


class BYOLLoss(nn.Module):
    """`byol_loss` as a module; forward(prediction, target, targets=None) -> scalar."""

    def forward(self, prediction: Tensor, target: Tensor, targets: Tensor | None = None) -> Tensor:
        return byol_loss(prediction, target, targets)
