"""Two gloo processes on CPU must reproduce one process on the full batch (loss and gradients).

Each rank computes its loss on its half of the batch and backpropagates; gradients are then
averaged over ranks as DDP does (all_reduce / world_size). The global objective is the mean over
all anchors: each rank's loss is the mean over its own anchors (equal counts per rank), so the
mean of the rank losses is the full-batch loss, and the averaged parameter gradient is its
gradient. The gradient reaching a rank's *inputs* is that of the SUM of the rank losses (the
gathered copies carry the other ranks' losses back), i.e. world_size times the full-batch one.
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
    full_batch_targets,
    linear_imix_data,
    run_linear_losses,
    run_on_gloo_ranks,
)

from contrastkit.objectives import MemoryQueue, moco_loss, npair_loss, nt_xent_loss
from contrastkit.objectives.distributed import (
    all_gather_no_grad,
    all_gather_with_grad,
    all_reduce_no_grad,
    all_reduce_sum_with_grad,
    world,
)

N_PER_RANK, IN_DIM, D, K = 3, 5, 4, 7
TEMPERATURE = 0.3


def _data() -> dict[str, torch.Tensor]:
    data = linear_imix_data(N_PER_RANK, IN_DIM, D, bank_rows=K)  # bank: MoCo's queue
    data["enqueue"] = float64_sampler(torch.Generator().manual_seed(1))(2, WORLD * N_PER_RANK, D)
    return data


def _losses(x1, x2, layer, data, soft, index) -> dict[str, torch.Tensor]:
    z1, z2 = layer(x1), layer(x2)
    return {
        "nt_xent": nt_xent_loss(z1, z2, TEMPERATURE),
        "npair": npair_loss(z1, z2, TEMPERATURE),
        "npair_soft": npair_loss(z1, z2, TEMPERATURE, soft),
        "npair_index": npair_loss(z1, z2, TEMPERATURE, index),
    }


def _local_losses(x1, x2, layer, data, soft, index) -> dict[str, torch.Tensor]:
    """Losses that communicate nothing: with i-Mix, MoCo's in-batch keys are this rank's only."""
    z1, z2 = layer(x1), layer(x2)
    return {"moco_soft": moco_loss(z1, z2.detach(), data["bank"], TEMPERATURE, soft)}


def _run(x1, x2, data, soft, index, losses=_losses) -> dict[str, dict[str, torch.Tensor]]:
    """Loss, parameter gradients and input gradients for every loss, one backward each."""
    return run_linear_losses(losses, x1, x2, data, soft, index)


def _public_helpers(rank: int) -> dict[str, torch.Tensor]:
    """What the public helpers return on this rank (mark: [rank, -rank])."""
    mark = torch.tensor([float(rank), -float(rank)])
    x = (torch.tensor([1.0, 2.0], dtype=torch.float64) * (rank + 1)).requires_grad_()
    summed = all_reduce_sum_with_grad(x)  # [3, 6] on both ranks
    # Rank r's loss weighs the sum by r + 1: the sum of the rank losses is 3 * sum(summed), so
    # every rank's x must get gradient 3 (a plain all_reduce would leave it r + 1).
    ((rank + 1) * summed.sum()).backward()
    results = {
        "world": torch.tensor(world()),
        "gathered": all_gather_no_grad(mark),
        "reduced_sum": all_reduce_no_grad(mark),
        "reduced_max": all_reduce_no_grad(mark, "max"),
        "summed": summed.detach(),
        "summed_grad": x.grad,
    }
    results["mark_after"] = mark  # the no-grad reduce returns a new tensor
    return results


def _queue_labels(step: int) -> torch.Tensor:
    """(WORLD * N_PER_RANK,) int64 labels of the enqueued keys of `step`, each one different."""
    return torch.arange(WORLD * N_PER_RANK) + 100 * step


def _worker(rank: int) -> dict[str, dict[str, torch.Tensor]]:
    data = _data()
    mine = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
    args = (data["x1"][mine], data["x2"][mine], data, data["soft"][rank], data["index"][rank])
    results = _run(*args) | _run(*args, losses=_local_losses)
    ddp_average(results, ("loss", "weight", "bias"))
    queue = MemoryQueue(K, D, track_labels=True).double()
    for step in range(2):
        queue.enqueue(data["enqueue"][step][mine], _queue_labels(step)[mine])
    assert queue.labels is not None
    results["queue"] = {
        "keys": queue.keys.clone(), "ptr": queue.ptr.clone(), "labels": queue.labels.clone()
    }  # fmt: skip
    results["public"] = _public_helpers(rank)
    return results


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_two_gloo_ranks_match_one_process_on_the_full_batch(tmp_path):
    ranks = run_on_gloo_ranks(_worker, tmp_path)

    data = _data()
    # One process, full batch; per-rank i-Mix targets become block-diagonal (offset indices).
    full = _run(data["x1"], data["x2"], data, *full_batch_targets(data["soft"], data["index"]))
    assert_ranks_match_full_batch(
        ranks, full, ("loss", "weight", "bias"), ("x1", "x2"), rows_per_rank=N_PER_RANK
    )

    # MoCo (here with i-Mix targets) communicates nothing: after DDP averaging, loss and
    # parameter gradients are the mean of the per-half single-process values; inputs see only
    # their own rank's loss.
    halves = [
        _run(
            data["x1"][r * N_PER_RANK : (r + 1) * N_PER_RANK],
            data["x2"][r * N_PER_RANK : (r + 1) * N_PER_RANK],
            data,
            data["soft"][r],
            data["index"][r],
            losses=_local_losses,
        )["moco_soft"]
        for r in range(WORLD)
    ]
    for rank, result in enumerate(ranks):
        got = result["moco_soft"]
        for key in ("loss", "weight", "bias"):
            expected = sum(half[key] for half in halves) / WORLD
            torch.testing.assert_close(got[key], expected, msg=f"moco {key}")
        torch.testing.assert_close(got["x1"], halves[rank]["x1"], msg="moco dx1")

    # The public helpers: each rank knows its place, the gather is in rank order, the reductions
    # are element-wise over ranks, and the differentiable sum sends every rank's loss back.
    for rank, result in enumerate(ranks):
        public = result["public"]
        assert public["world"].tolist() == [rank, WORLD]
        assert public["gathered"].tolist() == [0.0, -0.0, 1.0, -1.0]
        assert public["reduced_sum"].tolist() == [1.0, -1.0]
        assert public["reduced_max"].tolist() == [1.0, 0.0]
        assert public["mark_after"].tolist() == [float(rank), -float(rank)]
        assert public["summed"].tolist() == [3.0, 6.0]
        assert public["summed_grad"].tolist() == [3.0, 3.0]

    # The queue holds both ranks' keys (rank order) on every rank, as one process enqueuing all.
    # Its labels follow the keys the same way.
    single = MemoryQueue(K, D, track_labels=True).double()
    for step in range(2):
        single.enqueue(data["enqueue"][step], _queue_labels(step))
    assert single.labels is not None
    for result in ranks:
        torch.testing.assert_close(result["queue"]["keys"], single.keys)
        assert result["queue"]["ptr"].item() == single.ptr.item()
        assert torch.equal(result["queue"]["labels"], single.labels)


def test_public_helpers_are_the_identity_without_a_process_group():
    assert not (dist.is_available() and dist.is_initialized())
    assert world() == (0, 1)
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    assert all_gather_no_grad(x) is x
    assert all_reduce_sum_with_grad(x) is x
    assert all_reduce_no_grad(x) is x
    assert all_reduce_no_grad(x, "max") is x
    with pytest.raises(ValueError, match=r"op must be 'sum' or 'max', got 'mean'"):
        all_reduce_no_grad(x, "mean")
