"""MoCo v3, NNCLR and SupCon on two gloo processes must reproduce one process on the full batch.

Each rank computes its loss on its half of the batch and backpropagates; loss and parameter
gradients are then averaged over ranks as DDP does. MoCo v3 gathers its keys without gradient,
NNCLR its predictions and SupCon its embeddings with gradient: in every case rank r's inputs
receive W times the full-batch input gradient (see test_objectives_distributed.py for why), and
the averaged parameter gradient is the full-batch one. The SupCon labels put classes on both ranks.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from objectives_testing import (
    WORLD,
    assert_ranks_match_full_batch,
    ddp_average,
    full_batch_targets,
    linear_imix_data,
    linear_layer,
    run_linear_losses,
    run_on_gloo_ranks,
)

from contrastkit.objectives.mocov3 import mocov3_loss
from contrastkit.objectives.nnclr import NNCLRLoss, nnclr_loss
from contrastkit.objectives.supcon import supcon_loss

N_PER_RANK, IN_DIM, D, K = 3, 5, 4, 7
TEMPERATURE = 0.3


def _data() -> dict[str, torch.Tensor]:
    data = linear_imix_data(N_PER_RANK, IN_DIM, D, bank_rows=K)  # bank: NNCLR's support set
    # classes 0 and 1 span both ranks, class 5 appears once (no positive with one view)
    data["labels"] = torch.tensor([0, 1, 5, 1, 0, 0])
    return data


def _losses(x1, x2, layer, data, labels, soft, index) -> dict[str, torch.Tensor]:
    z1, z2 = layer(x1), layer(x2)
    p1, p2 = torch.tanh(z1) + 0.5 * z1.roll(1, dims=1), torch.tanh(z2)  # a "predictor"
    return {
        "mocov3": mocov3_loss(p1, p2, z1, z2, TEMPERATURE),
        "mocov3_imix": mocov3_loss(p1, p2, z1, z2, TEMPERATURE, targets1=soft, targets2=index),
        "nnclr": nnclr_loss(z1, z2, p1, p2, data["bank"], TEMPERATURE),
        "supcon": supcon_loss([z1, z2, p1], labels, TEMPERATURE, 0.07),
        "supcon_single_view": supcon_loss([z1], labels, TEMPERATURE, 0.07),
        "supcon_unlabelled": supcon_loss(torch.stack([z1, p2], dim=1), None, TEMPERATURE),
    }


def _run(x1, x2, data, labels, soft, index) -> dict[str, dict[str, torch.Tensor]]:
    """Loss, parameter gradients and input gradients for every loss, one backward each."""
    return run_linear_losses(_losses, x1, x2, data, labels, soft, index)


def _nnclr_module_state(x1, x2, data) -> dict[str, torch.Tensor]:
    """Two NNCLRLoss steps: the support set each rank ends with (it gathers z1 of all ranks)."""
    module = NNCLRLoss(K, D, TEMPERATURE, seed=1).double()
    layer = linear_layer(data)
    losses = []
    for _ in range(2):
        z1, z2 = layer(x1), layer(x2)
        losses.append(module(z1, z2, z1.flip(1), z2.flip(1)).detach())
    return {
        "keys": module.support.keys.clone(),
        "ptr": module.support.ptr.clone(),
        "loss": losses[1],
    }


def _worker(rank: int) -> dict[str, dict[str, torch.Tensor]]:
    data = _data()
    mine = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
    x1, x2 = data["x1"][mine], data["x2"][mine]
    results = _run(x1, x2, data, data["labels"][mine], data["soft"][rank], data["index"][rank])
    results["nnclr_module"] = _nnclr_module_state(x1, x2, data)
    ddp_average(results, ("loss", "weight", "bias"))
    return results


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_two_gloo_ranks_match_one_process_on_the_full_batch(tmp_path):
    ranks = run_on_gloo_ranks(_worker, tmp_path)

    data = _data()
    # One process, full batch; per-rank i-Mix targets become block-diagonal (offset indices).
    soft_full, index_full = full_batch_targets(data["soft"], data["index"])
    full = _run(data["x1"], data["x2"], data, data["labels"], soft_full, index_full)
    assert set(full) < set(ranks[0])
    # The single-view SupCon never sees x2: its None gradient must be None on the ranks too.
    assert_ranks_match_full_batch(
        ranks, full, ("loss", "weight", "bias"), ("x1", "x2"), rows_per_rank=N_PER_RANK
    )

    # NNCLRLoss: every rank's support set holds both ranks' z1 (rank order), as one process.
    single = _nnclr_module_state(data["x1"], data["x2"], data)
    for result in ranks:
        got = result["nnclr_module"]
        torch.testing.assert_close(got["keys"], single["keys"])
        assert got["ptr"].item() == single["ptr"].item() == 2 * WORLD * N_PER_RANK % K
        torch.testing.assert_close(got["loss"], single["loss"], msg="NNCLRLoss second step")
