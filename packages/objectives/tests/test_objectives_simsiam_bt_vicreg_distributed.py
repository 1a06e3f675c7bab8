"""SimSiam, Barlow Twins and VICReg on two gloo processes must reproduce one process on the full batch.

Each rank computes its loss on its half of the batch and backpropagates; loss and parameter
gradients are then averaged over ranks as DDP does. The gradient reaching a rank's *inputs* is
that of the SUM of the rank losses (the all-reduce / all-gather carries the other ranks' losses
back), i.e. world_size times the full-batch one (see test_objectives_distributed.py).
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

from contrastkit.objectives.barlow_twins import barlow_twins_loss
from contrastkit.objectives.simsiam import simsiam_loss
from contrastkit.objectives.vicreg import vicreg_loss

N_PER_RANK, IN_DIM, D = 4, 5, 3


def _data() -> dict[str, torch.Tensor]:
    rand = float64_sampler(torch.Generator().manual_seed(0))
    n = WORLD * N_PER_RANK
    return {
        "x1": rand(n, IN_DIM),
        "x2": rand(n, IN_DIM) + 0.5,
        "weight": rand(D, IN_DIM),
        "bias": rand(D),
        "predictor": rand(D, D),
    }


def _network(data: dict[str, torch.Tensor]) -> torch.nn.ModuleDict:
    projector = torch.nn.Linear(IN_DIM, D, dtype=torch.float64)
    predictor = torch.nn.Linear(D, D, bias=False, dtype=torch.float64)
    with torch.no_grad():
        projector.weight.copy_(data["weight"])
        projector.bias.copy_(data["bias"])
        predictor.weight.copy_(data["predictor"])
    return torch.nn.ModuleDict({"projector": projector, "predictor": predictor})


LOSSES = {
    "simsiam": lambda z1, z2, p1, p2: simsiam_loss(p1, p2, z1, z2),
    "barlow_twins": lambda z1, z2, p1, p2: barlow_twins_loss(z1, z2),
    "barlow_twins_scaled": lambda z1, z2, p1, p2: barlow_twins_loss(z1, z2, 0.3, 0.1),
    "vicreg": lambda z1, z2, p1, p2: vicreg_loss(z1, z2),
    "vicreg_weights": lambda z1, z2, p1, p2: vicreg_loss(z1, z2, 2.0, 3.0, 0.5, 1e-3),
}


def _run(x1: torch.Tensor, x2: torch.Tensor, data) -> dict[str, dict[str, torch.Tensor]]:
    """Loss, parameter gradients and input gradients of every loss, one backward each."""
    results = {}
    for name, loss_fn in LOSSES.items():
        network = _network(data)
        a, b = x1.clone().requires_grad_(), x2.clone().requires_grad_()
        z1, z2 = network["projector"](a), network["projector"](b)
        loss = loss_fn(z1, z2, network["predictor"](z1), network["predictor"](z2))
        loss.backward()
        results[name] = {
            "loss": loss.detach(),
            "weight": network["projector"].weight.grad,
            "bias": network["projector"].bias.grad,
            "predictor": network["predictor"].weight.grad,
            "x1": a.grad,
            "x2": b.grad,
        }
    return results


def _worker(rank: int) -> dict[str, dict[str, torch.Tensor]]:
    data = _data()
    mine = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
    results = _run(data["x1"][mine], data["x2"][mine], data)
    for entry in results.values():
        entry["own_loss"] = entry["loss"].clone()
    ddp_average(results, ("loss", "weight", "bias", "predictor"))
    return results


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_two_gloo_ranks_match_one_process_on_the_full_batch(tmp_path):
    ranks = run_on_gloo_ranks(_worker, tmp_path)
    data = _data()
    full = _run(data["x1"], data["x2"], data)
    # The predictor takes part in SimSiam only: its None gradient must be None on the ranks too.
    assert_ranks_match_full_batch(
        ranks,
        full,
        ("loss", "weight", "bias", "predictor"),
        ("x1", "x2"),
        rows_per_rank=N_PER_RANK,
    )

    # Barlow Twins' statistics and correlation are global: every rank's own loss is already the
    # full-batch loss. SimSiam communicates nothing: each rank's loss is that of its own half.
    for result in ranks:
        for name in ("barlow_twins", "barlow_twins_scaled"):
            torch.testing.assert_close(result[name]["own_loss"], full[name]["loss"])
    for rank, result in enumerate(ranks):
        half = _run(
            data["x1"][rank * N_PER_RANK : (rank + 1) * N_PER_RANK],
            data["x2"][rank * N_PER_RANK : (rank + 1) * N_PER_RANK],
            data,
        )
        torch.testing.assert_close(result["simsiam"]["own_loss"], half["simsiam"]["loss"])
        # VICReg: variance and covariance are global, so a rank's loss is not its half's loss.
        assert not torch.allclose(result["vicreg"]["own_loss"], half["vicreg"]["loss"])
