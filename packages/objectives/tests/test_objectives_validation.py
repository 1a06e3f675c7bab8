"""Every bad input raises ValueError naming the argument and what was wrong with it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastkit.objectives import (
    ISDLoss,
    MemoryQueue,
    MoCoLoss,
    NPairLoss,
    NTXentLoss,
    byol_loss,
    cosine_momentum,
    ema_update,
    imix_cutmix,
    imix_mixup,
    isd_loss,
    moco_loss,
    npair_loss,
    nt_xent_loss,
)

A = torch.randn(4, 3)
B = torch.randn(4, 3)
Q = torch.randn(10, 3)
SOFT = torch.full((4, 4), 0.25)

CASES = {
    # embeddings
    "z1 not a tensor": (lambda: nt_xent_loss([[1.0]], B), r"z1 must be a torch\.Tensor, got list"),
    "z1 1-d": (lambda: nt_xent_loss(A[0], B), r"z1 must have shape \(N, D\), got shape \(3,\)"),
    "z2 3-d": (
        lambda: nt_xent_loss(A, B[None]),
        r"z2 must have shape \(N, D\), got shape \(1, 4, 3\)",
    ),
    "z1 integer": (
        lambda: nt_xent_loss(A.long(), B),
        r"z1 must have a floating dtype, got torch\.int64",
    ),
    "z1 empty batch": (
        lambda: nt_xent_loss(A[:0], B[:0]),
        r"z1 must be non-empty, got shape \(0, 3\)",
    ),
    "z1 zero dim": (
        lambda: nt_xent_loss(A[:, :0], B[:, :0]),
        r"z1 must be non-empty, got shape \(4, 0\)",
    ),
    "N mismatch": (
        lambda: nt_xent_loss(A, B[:3]),
        r"z1 and z2 must have the same shape.*\(4, 3\) and \(3, 3\)",
    ),
    "D mismatch": (
        lambda: npair_loss(A, B[:, :2]),
        r"query and key must have the same shape.*\(4, 3\) and \(4, 2\)",
    ),
    "device mismatch": (
        lambda: byol_loss(A, B.to("meta")),
        r"prediction and target must be on the same device, got cpu and meta",
    ),
    "prediction integer": (lambda: byol_loss(A.int(), B), r"prediction must have a floating dtype"),
    "student 1-d": (lambda: isd_loss(A[0], B, Q), r"student must have shape \(N, D\)"),
    # temperatures
    "temperature zero": (
        lambda: nt_xent_loss(A, B, 0.0),
        r"temperature must be a finite number > 0, got 0\.0",
    ),
    "temperature negative": (
        lambda: npair_loss(A, B, -0.1),
        r"temperature must be a finite number > 0, got -0\.1",
    ),
    "temperature nan": (
        lambda: moco_loss(A, B, Q, float("nan")),
        r"temperature must be a finite number > 0, got nan",
    ),
    "temperature inf": (
        lambda: nt_xent_loss(A, B, float("inf")),
        r"temperature must be a finite number > 0, got inf",
    ),
    "temperature string": (
        lambda: nt_xent_loss(A, B, "0.5"),
        r"temperature must be a number > 0, got '0\.5'",
    ),
    "temperature bool": (
        lambda: nt_xent_loss(A, B, True),
        r"temperature must be a number > 0, got True",
    ),
    "student_temperature": (
        lambda: isd_loss(A, B, Q, 0.0),
        r"student_temperature must be a finite number > 0, got 0\.0",
    ),
    "teacher_temperature": (
        lambda: isd_loss(A, B, Q, 0.1, -1),
        r"teacher_temperature must be a finite number > 0, got -1",
    ),
    # queue
    "queue dim": (
        lambda: moco_loss(A, B, Q[:, :2]),
        r"queue dim must equal the embedding dim 3, got queue shape \(10, 2\)",
    ),
    "queue ndim": (
        lambda: isd_loss(A, B, Q[0]),
        r"queue must have shape \(K, D\), got shape \(3,\)",
    ),
    "queue integer": (lambda: moco_loss(A, B, Q.long()), r"queue must have a floating dtype"),
    "queue empty": (lambda: isd_loss(A, B, Q[:0]), r"queue must be non-empty, got shape \(0, 3\)"),
    "queue device": (
        lambda: moco_loss(A, B, Q.to("meta")),
        r"query and queue must be on the same device",
    ),
    # targets
    "targets list": (
        lambda: npair_loss(A, B, targets=[0, 1, 2, 3]),
        r"targets must be None or a torch\.Tensor, got list",
    ),
    "targets bool": (
        lambda: npair_loss(A, B, targets=torch.ones(4, dtype=torch.bool)),
        r"targets must be int64 indices.*got dtype torch\.bool",
    ),
    "soft targets shape": (
        lambda: npair_loss(A, B, targets=SOFT[:3]),
        r"soft targets must have shape \(N, N\) = \(4, 4\), got \(3, 4\)",
    ),
    "soft targets row sum": (
        lambda: moco_loss(A, B, Q, targets=SOFT * 2),
        r"soft targets must be non-negative with rows summing to 1, got row sums in \[2, 2\]",
    ),
    "soft targets negative": (
        lambda: byol_loss(A, B, targets=torch.eye(4) * 2 - 0.25),
        r"soft targets must be non-negative.*minimum -0\.25",
    ),
    "index targets shape": (
        lambda: npair_loss(A, B, targets=torch.zeros(4, 1, dtype=torch.long)),
        r"index targets must have shape \(N,\) = \(4,\), got \(4, 1\)",
    ),
    "index targets range": (
        lambda: moco_loss(A, B, Q, targets=torch.tensor([0, 1, 2, 4])),
        r"index targets must lie in \[0, 4\), got values in \[0, 4\]",
    ),
    "index targets negative": (
        lambda: byol_loss(A, B, targets=torch.tensor([0, -1, 2, 3])),
        r"index targets must lie in \[0, 4\), got values in \[-1, 3\]",
    ),
    # i-Mix
    "mixup alpha": (lambda: imix_mixup(A, 0.0), r"alpha must be a finite number > 0, got 0\.0"),
    "cutmix alpha": (
        lambda: imix_cutmix(torch.zeros(2, 1, 4, 4), -1.0),
        r"alpha must be a finite number > 0, got -1\.0",
    ),
    "mixup not tensor": (lambda: imix_mixup([1.0, 2.0]), r"x must be a torch\.Tensor, got list"),
    "mixup scalar": (
        lambda: imix_mixup(torch.tensor(1.0)),
        r"x must have shape \(N, \.\.\.\), got shape \(\)",
    ),
    "mixup empty": (
        lambda: imix_mixup(A[:0]),
        r"x must hold at least one sample, got shape \(0, 3\)",
    ),
    "mixup integer": (
        lambda: imix_mixup(A.long()),
        r"x must have a floating dtype for mixup, got torch\.int64",
    ),
    "cutmix 2-d": (lambda: imix_cutmix(A), r"x must have shape \(N, C, H, W\), got shape \(4, 3\)"),
    "mixup generator": (
        lambda: imix_mixup(A, 1.0, 0),
        r"generator must be a torch\.Generator or None, got int",
    ),
    # EMA and schedule
    "momentum high": (
        lambda: ema_update(nn.Linear(2, 2), nn.Linear(2, 2), 1.1),
        r"momentum must be in \[0, 1\], got 1\.1",
    ),
    "momentum type": (
        lambda: ema_update(nn.Linear(2, 2), nn.Linear(2, 2), None),
        r"momentum must be a number in \[0, 1\], got None",
    ),
    "ema shapes": (
        lambda: ema_update(nn.Linear(2, 2), nn.Linear(3, 2), 0.5),
        r"names and shapes, first difference: teacher \('weight', \(2, 2\)\) vs student \('weight', \(2, 3\)\)",
    ),
    "ema count": (
        lambda: ema_update(nn.Linear(2, 2), nn.Linear(2, 2, bias=False), 0.5),
        r"teacher has 2 parameters, student has 1",
    ),
    "schedule step negative": (
        lambda: cosine_momentum(-1, 10),
        r"step must be an int in \[0, total_steps=10\], got -1",
    ),
    "schedule step past end": (
        lambda: cosine_momentum(11, 10),
        r"step must be an int in \[0, total_steps=10\], got 11",
    ),
    "schedule total": (lambda: cosine_momentum(0, 0), r"total_steps must be an int >= 1, got 0"),
    "schedule base": (
        lambda: cosine_momentum(0, 10, base=1.5),
        r"base must be in \[0, 1\], got 1\.5",
    ),
    "schedule final": (
        lambda: cosine_momentum(0, 10, final=-0.1),
        r"final must be in \[0, 1\], got -0\.1",
    ),
    # queue module
    "queue size": (lambda: MemoryQueue(0, 3), r"size must be an int >= 1, got 0"),
    "queue seed": (lambda: MemoryQueue(4, 3, seed=-1), r"seed must be an int >= 0, got -1"),
    "queue dim arg": (lambda: MemoryQueue(4, 2.5), r"dim must be an int >= 1, got 2\.5"),
    "enqueue dim": (
        lambda: MemoryQueue(4, 3).enqueue(torch.randn(2, 5)),
        r"keys must have shape \(B, 3\) to match the queue dim, got \(2, 5\)",
    ),
    "enqueue ndim": (
        lambda: MemoryQueue(4, 3).enqueue(torch.randn(3)),
        r"keys must have shape \(B, 3\), got shape \(3,\)",
    ),
    "enqueue empty": (
        lambda: MemoryQueue(4, 3).enqueue(torch.randn(0, 3)),
        r"keys must be non-empty",
    ),
    "enqueue integer": (
        lambda: MemoryQueue(4, 3).enqueue(torch.ones(2, 3, dtype=torch.long)),
        r"keys must have a floating dtype",
    ),
    # module wrappers validate at construction
    "NTXentLoss": (lambda: NTXentLoss(0), r"temperature must be a finite number > 0, got 0"),
    "NPairLoss": (lambda: NPairLoss(-2.0), r"temperature must be a finite number > 0"),
    "MoCoLoss": (lambda: MoCoLoss(float("inf")), r"temperature must be a finite number > 0"),
    "ISDLoss": (lambda: ISDLoss(0.1, 0.0), r"teacher_temperature must be a finite number > 0"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_value_error_naming_it(case):
    call, message = CASES[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_valid_edge_inputs_are_accepted():
    # One-sample batches, int32 indices, float64 soft targets with float32 embeddings.
    one = torch.randn(1, 3)
    assert torch.isfinite(nt_xent_loss(one, one.flip(1)))
    assert torch.isfinite(npair_loss(A, B, targets=torch.tensor([3, 2, 1, 0], dtype=torch.int32)))
    assert torch.isfinite(moco_loss(A, B, Q, targets=SOFT.double()))
