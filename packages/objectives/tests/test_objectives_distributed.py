"""Two gloo processes on CPU must reproduce one process on the full batch (loss and gradients).

Each rank computes its loss on its half of the batch and backpropagates; gradients are then
averaged over ranks as DDP does (all_reduce / world_size). The global objective is the mean over
all anchors: each rank's loss is the mean over its own anchors (equal counts per rank), so the
mean of the rank losses is the full-batch loss, and the averaged parameter gradient is its
gradient. The gradient reaching a rank's *inputs* is that of the SUM of the rank losses (the
gathered copies carry the other ranks' losses back), i.e. world_size times the full-batch one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from contrastkit.objectives import MemoryQueue, moco_loss, npair_loss, nt_xent_loss
from contrastkit.objectives.distributed import all_gather_no_grad, all_gather_with_grad, world

WORLD = 2
N_PER_RANK, IN_DIM, D, K = 3, 5, 4, 7
TEMPERATURE = 0.3


def _data() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    n = WORLD * N_PER_RANK
    soft_blocks = []
    for _ in range(WORLD):
        block = rand(N_PER_RANK, N_PER_RANK).exp()
        soft_blocks.append(block / block.sum(dim=1, keepdim=True))
    return {
        "x1": rand(n, IN_DIM),
        "x2": rand(n, IN_DIM),
        "weight": rand(D, IN_DIM),
        "bias": rand(D),
        "queue": rand(K, D),
        "soft": torch.stack(soft_blocks),  # (WORLD, n, n): each rank's local i-Mix targets
        "index": torch.stack(
            [torch.randperm(N_PER_RANK, generator=generator) for _ in range(WORLD)]
        ),
        "enqueue": rand(2, n, D),
    }


def _linear(data: dict[str, torch.Tensor]) -> torch.nn.Linear:
    layer = torch.nn.Linear(IN_DIM, D, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(data["weight"])
        layer.bias.copy_(data["bias"])
    return layer


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
    return {"moco_soft": moco_loss(z1, z2.detach(), data["queue"], TEMPERATURE, soft)}


def _run(x1, x2, data, soft, index, losses=_losses) -> dict[str, dict[str, torch.Tensor]]:
    """Loss, parameter gradients and input gradients for every loss, one backward each."""
    results = {}
    for name in losses(x1, x2, _linear(data), data, soft, index):
        layer = _linear(data)
        a, b = x1.clone().requires_grad_(), x2.clone().requires_grad_()
        loss = losses(a, b, layer, data, soft, index)[name]
        loss.backward()
        results[name] = {
            "loss": loss.detach(),
            "weight": layer.weight.grad,
            "bias": layer.bias.grad,
            "x1": a.grad,
            "x2": b.grad,
        }
    return results


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        data = _data()
        mine = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
        args = (data["x1"][mine], data["x2"][mine], data, data["soft"][rank], data["index"][rank])
        results = _run(*args) | _run(*args, losses=_local_losses)
        for entry in results.values():
            for key in ("loss", "weight", "bias"):  # what DDP would average
                dist.all_reduce(entry[key])
                entry[key] /= WORLD
        queue = MemoryQueue(K, D).double()
        for step in range(2):
            queue.enqueue(data["enqueue"][step][mine])
        results["queue"] = {"keys": queue.keys.clone(), "ptr": queue.ptr.clone()}
        mark = torch.full((2,), float(rank))
        results["public"] = {
            "world": torch.tensor(world()),
            "gathered": all_gather_no_grad(mark),
        }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_two_gloo_ranks_match_one_process_on_the_full_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    data = _data()
    # One process, full batch; per-rank i-Mix targets become block-diagonal (offset indices).
    soft_full = torch.block_diag(*data["soft"])
    index_full = torch.cat([data["index"][r] + r * N_PER_RANK for r in range(WORLD)])
    full = _run(data["x1"], data["x2"], data, soft_full, index_full)

    for name, expected in full.items():
        for rank, result in enumerate(ranks):
            got = result[name]
            torch.testing.assert_close(got["loss"], expected["loss"], msg=f"{name} loss")
            torch.testing.assert_close(got["weight"], expected["weight"], msg=f"{name} dW")
            torch.testing.assert_close(got["bias"], expected["bias"], msg=f"{name} db")
            mine = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
            for key in ("x1", "x2"):
                if expected[key] is None:
                    assert got[key] is None
                    continue
                torch.testing.assert_close(
                    got[key] / WORLD, expected[key][mine], msg=f"{name} d{key} rank {rank}"
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

    # The public helpers: each rank knows its place, and the gather is in rank order.
    for rank, result in enumerate(ranks):
        assert result["public"]["world"].tolist() == [rank, WORLD]
        assert result["public"]["gathered"].tolist() == [0.0, 0.0, 1.0, 1.0]

    # The queue holds both ranks' keys (rank order) on every rank, as one process enqueuing all.
    single = MemoryQueue(K, D).double()
    for step in range(2):
        single.enqueue(data["enqueue"][step])
    for result in ranks:
        torch.testing.assert_close(result["queue"]["keys"], single.keys)
        assert result["queue"]["ptr"].item() == single.ptr.item()


def test_public_helpers_are_the_identity_without_a_process_group():
    assert not (dist.is_available() and dist.is_initialized())
    assert world() == (0, 1)
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    assert all_gather_no_grad(x) is x
