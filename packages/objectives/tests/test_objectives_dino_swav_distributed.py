"""DINO and SwAV on two gloo processes must reproduce one process on the full batch.

Each rank holds half of the rows of every crop. DINO communicates only in its centre update (the
teacher outputs' sum is all-reduced); SwAV only inside Sinkhorn (per-prototype sums over the global
batch, queues included). So after DDP-style gradient averaging, the mean of the rank losses, the
averaged parameter gradients, the centre and the codes equal the single-process ones; the gradient
reaching a rank's own inputs is that of its own loss, i.e. world_size times the full-batch one.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from objectives_testing import (
    WORLD,
    assert_ranks_match_full_batch,
    ddp_average,
    float64_sampler,
    run_on_gloo_ranks,
)

from contrastkit.objectives.dino import DINOLoss
from contrastkit.objectives.swav import SwAVLoss, SwAVQueue, normalize_prototypes, sinkhorn_knopp

N_PER_RANK, IN_DIM, K, D, CROPS = 3, 5, 4, 3, 4


def _data() -> dict[str, torch.Tensor]:
    rand = float64_sampler(torch.Generator().manual_seed(0))
    n = WORLD * N_PER_RANK
    return {
        "x": rand(CROPS, n, IN_DIM),  # crops 0 and 1 are the global crops
        "student_weight": rand(K, IN_DIM),
        "teacher_weight": rand(K, IN_DIM),
        "swav_weight": rand(D, IN_DIM),
        "prototypes": rand(K, D),
        "history": rand(2, n, D),  # the previous batch's embeddings of crops 0 and 1
        "scores": rand(n, K),
    }


def _dino(x: torch.Tensor, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Two steps (epochs 0 and 1 of a 2-epoch warm-up): the second uses the updated centre."""
    student = data["student_weight"].clone().requires_grad_()
    x = x.clone().requires_grad_()
    module = DINOLoss(K, 0.04, 0.07, warmup_epochs=2).double()
    losses = []
    for epoch in range(2):
        student_out = [crop @ student.T for crop in x]
        teacher_out = [crop @ data["teacher_weight"].T for crop in x[:2]]
        losses.append(module(student_out, teacher_out, epoch))
    total = losses[0] + losses[1]
    total.backward()
    return {"loss": total.detach(), "weight": student.grad, "x": x.grad, "center": module.center}


def _swav(x: torch.Tensor, history: torch.Tensor, data: dict[str, torch.Tensor]):
    weight = data["swav_weight"].clone().requires_grad_()
    prototypes = data["prototypes"].clone()
    normalize_prototypes(prototypes)
    prototypes.requires_grad_()
    x = x.clone().requires_grad_()
    z = [torch.nn.functional.normalize(crop @ weight.T, dim=1) for crop in x]
    scores = [v @ prototypes.T for v in z]
    queue = SwAVQueue(length=history.shape[1], dim=D).double()
    queue.push(list(history))
    loss_fn = SwAVLoss(0.1, 0.05, 3)
    plain = loss_fn(scores)
    queued = loss_fn(scores, queue.scores(prototypes))
    total = plain + queued
    total.backward()
    return {
        "loss": total.detach(),
        "weight": weight.grad,
        "prototypes": prototypes.grad,
        "x": x.grad,
    }


def _worker(rank: int) -> dict[str, object]:
    data = _data()
    mine = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
    results = {
        "dino": _dino(data["x"][:, mine], data),
        "swav": _swav(data["x"][:, mine], data["history"][:, mine], data),
    }
    ddp_average(results, ("loss", "weight", "prototypes"))
    # Unequal shares of the batch: rank 0 two rows, rank 1 four.
    rows = slice(0, 2) if rank == 0 else slice(2, 6)
    results["codes"] = sinkhorn_knopp(data["scores"][rows], 0.05, 3)
    return results


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_two_gloo_ranks_match_one_process_on_the_full_batch(tmp_path):
    ranks = run_on_gloo_ranks(_worker, tmp_path)

    data = _data()
    full = {"dino": _dino(data["x"], data), "swav": _swav(data["x"], data["history"], data)}
    # Crops are dimension 0 of x, rows dimension 1.
    assert_ranks_match_full_batch(
        ranks,
        full,
        ("loss", "weight", "prototypes", "center"),
        ("x",),
        rows_per_rank=N_PER_RANK,
        batch_dim=1,
    )

    codes = sinkhorn_knopp(data["scores"], 0.05, 3)
    torch.testing.assert_close(torch.cat([ranks[0]["codes"], ranks[1]["codes"]]), codes)
