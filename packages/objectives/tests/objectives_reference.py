"""Loop-by-hand reference versions of the objectives, written independently of the package.

Each walks over anchors (and keys) with explicit Python loops and scalar tensor ops, so it is slow,
obviously correct, and still differentiable (the tests compare gradients too).
"""

from __future__ import annotations

import torch
from torch import Tensor


def unit(v: Tensor) -> Tensor:
    return v / torch.sqrt((v * v).sum())


def dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum()


def cosine(a: Tensor, b: Tensor) -> Tensor:
    return dot(a, b) / (torch.sqrt(dot(a, a)) * torch.sqrt(dot(b, b)))


def log_sum_exp(values: list[Tensor]) -> Tensor:
    top = max(float(v.detach()) for v in values)
    return top + torch.log(sum(torch.exp(v - top) for v in values))


def as_soft(targets: Tensor | None, n: int) -> Tensor:
    """None -> identity, (n,) indices -> one-hot rows, (n, n) -> as given (float64)."""
    if targets is None:
        return torch.eye(n, dtype=torch.float64)
    if not targets.is_floating_point():
        soft = torch.zeros(n, n, dtype=torch.float64)
        for i in range(n):
            soft[i, int(targets[i])] = 1.0
        return soft
    return targets.to(torch.float64)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    n = z1.shape[0]
    views = [unit(z1[i]) for i in range(n)] + [unit(z2[i]) for i in range(n)]
    total = 0.0
    for i in range(2 * n):
        partner = i + n if i < n else i - n
        others = [dot(views[i], views[k]) / temperature for k in range(2 * n) if k != i]
        total = total - (dot(views[i], views[partner]) / temperature - log_sum_exp(others))
    return total / (2 * n)


def soft_cross_entropy_rows(logit_rows: list[list[Tensor]], soft: Tensor) -> Tensor:
    total = 0.0
    for i, row in enumerate(logit_rows):
        lse = log_sum_exp(row)
        for j, logit in enumerate(row):
            if soft[i, j] != 0:
                total = total - soft[i, j] * (logit - lse)
    return total / len(logit_rows)


def npair(query: Tensor, key: Tensor, temperature: float, targets: Tensor | None) -> Tensor:
    n = query.shape[0]
    soft = as_soft(targets, n)
    rows = [[dot(unit(query[i]), unit(key[j])) / temperature for j in range(n)] for i in range(n)]
    return soft_cross_entropy_rows(rows, soft)


def moco(
    query: Tensor, key: Tensor, queue: Tensor, temperature: float, targets: Tensor | None
) -> Tensor:
    n, k = query.shape[0], queue.shape[0]
    if targets is None:
        rows = []
        for i in range(n):
            q = unit(query[i])
            row = [dot(q, unit(key[i])) / temperature]
            row += [dot(q, unit(queue[m])) / temperature for m in range(k)]
            rows.append(row)
        soft = torch.zeros(n, 1 + k, dtype=torch.float64)
        soft[:, 0] = 1.0
        return soft_cross_entropy_rows(rows, soft)
    soft = torch.cat([as_soft(targets, n), torch.zeros(n, k, dtype=torch.float64)], dim=1)
    rows = []
    for i in range(n):
        q = unit(query[i])
        row = [dot(q, unit(key[j])) / temperature for j in range(n)]
        row += [dot(q, unit(queue[m])) / temperature for m in range(k)]
        rows.append(row)
    return soft_cross_entropy_rows(rows, soft)


def isd(
    student: Tensor,
    teacher: Tensor,
    queue: Tensor,
    student_temperature: float,
    teacher_temperature: float,
) -> Tensor:
    n, k = student.shape[0], queue.shape[0]
    total = 0.0
    for i in range(n):
        s, t = unit(student[i]), unit(teacher[i].detach())
        s_logits = [dot(s, unit(queue[m])) / student_temperature for m in range(k)]
        t_logits = [dot(t, unit(queue[m])) / teacher_temperature for m in range(k)]
        s_lse, t_lse = log_sum_exp(s_logits), log_sum_exp(t_logits)
        for m in range(k):
            log_p_teacher = t_logits[m] - t_lse
            log_p_student = s_logits[m] - s_lse
            total = total + torch.exp(log_p_teacher) * (log_p_teacher - log_p_student)
    return total / n


def byol(prediction: Tensor, target: Tensor, targets: Tensor | None) -> Tensor:
    n = prediction.shape[0]
    soft = as_soft(targets, n)
    total = 0.0
    for i in range(n):
        p = prediction[i]
        weighted = 0.0
        for j in range(n):
            weighted = weighted + soft[i, j] * cosine(p, target[j].detach())
        total = total + (2 - 2 * weighted)
    return total / n
