"""NNCLR (Dwibedi et al., ICCV 2021): contrast each view's nearest neighbour in a support set with the other view.

The support set is a FIFO queue of past projections (a `MemoryQueue`); the neighbour lookup runs
under no_grad, so the gradient reaches the network only through the predictions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from contrastkit.objectives._validation import (
    autocast_disabled,
    check_count,
    check_embeddings,
    check_queue,
    check_same_device,
    check_same_shape,
    check_temperature,
    compute_dtype,
    l2_normalize,
)
from contrastkit.objectives.functional import _in_batch_infonce
from contrastkit.objectives.queue import MemoryQueue


class NearestNeighbours(NamedTuple):
    """What `nearest_neighbours` returns: `values` (N, D) support rows, `indices` (N,) int64 rows."""

    values: Tensor
    indices: Tensor


@torch.no_grad()
def nearest_neighbours(z: Tensor, support: Tensor) -> NearestNeighbours:
    """For each row of `z`, the row of `support` with the highest cosine similarity.

    z: (N, D) query embeddings; support: (K, D) candidates (e.g. `MemoryQueue.keys`). Cosine
    similarity is computed in float32 (float64 if an input is float64) with autocast off, so
    half-precision rounding cannot reorder near-ties; ties go to the lowest index.
    Returns `NearestNeighbours(values, indices)`: values (N, D) are the chosen support rows as
    stored (same dtype, detached), indices (N,) int64. Never differentiable (the original looks
    neighbours up under no_grad). Memory: one (N, K) similarity matrix.
    """
    check_embeddings("z", z)
    support = check_queue(support, z.shape[1], "support")
    check_same_device("z", z, "support", support)
    dtype = compute_dtype(z, support)
    with autocast_disabled(z.device):
        similarity = l2_normalize(z, dtype) @ l2_normalize(support, dtype).T  # (N, K)
        indices = similarity.argmax(dim=1)
    return NearestNeighbours(support[indices].detach(), indices)


def nnclr_loss(
    z1: Tensor,
    z2: Tensor,
    p1: Tensor,
    p2: Tensor,
    support: Tensor,
    temperature: float = 0.1,
) -> Tensor:
    """NNCLR's symmetric loss `(ctr(NN(z1), p2) + ctr(NN(z2), p1)) / 2`.

    z1, z2: (N, D) projections of views 1 and 2 (only used to look up neighbours: no gradient
    reaches them); p1, p2: (N, D) predictor outputs of views 1 and 2; support: (K, D) support set,
    e.g. `MemoryQueue.keys` (see `NNCLRLoss`, which also updates it). `NN(z)` is the support row
    of highest cosine similarity (`nearest_neighbours`). `ctr(a, p)` is the cross entropy of
    `normalize(a) @ normalize(p).T / T` (N, N) with row i's positive in column i, averaged over the
    N rows: the neighbours are the anchors, the other view's predictions the candidates.
    temperature: > 0. Default 0.1: the NNCLR paper's and solo-learn's `nnclr_loss_func` default;
    solo-learn's CIFAR recipe (scripts/pretrain/cifar/nnclr.yaml) uses 0.2.

    Follows solo-learn solo/losses/nnclr.py and solo/methods/nnclr.py (`find_nn`: argmax of
    `z @ queue.T`; loss halves of both directions). lightly's NNCLR instead applies its SimCLR
    NTXentLoss to (NN(z), p), which adds the predictions as anchors and same-view negatives:
    that is `(nt_xent_loss(NN(z1), p2) + nt_xent_loss(NN(z2), p1)) / 2`, a different number.

    Distributed: with W > 1 ranks the normalised predictions of all ranks are gathered WITH
    gradient (as solo-learn's `gather(p)`), so each anchor has W*N - 1 negatives; the loss is
    the mean over this rank's N anchors. All ranks must pass the same N and hold the same support
    set (MemoryQueue.enqueue all-gathers). DDP's averaging gives the full-batch gradient.

    Returns a float32 scalar (float64 if an input is float64); math in float32 with autocast off.
    """
    for name, x in (("z1", z1), ("z2", z2), ("p1", p1), ("p2", p2)):
        check_embeddings(name, x)
    check_same_shape("z1", z1, "z2", z2)
    check_same_shape("p1", p1, "p2", p2)
    check_same_shape("z1", z1, "p1", p1)
    support = check_queue(support, z1.shape[1], "support")
    check_same_device("z1", z1, "support", support)
    temperature = check_temperature("temperature", temperature)
    neighbours1 = nearest_neighbours(z1, support).values
    neighbours2 = nearest_neighbours(z2, support).values
    dtype = compute_dtype(z1, z2, p1, p2, support)
    with autocast_disabled(p1.device):
        # solo-learn's `nnclr_loss_func`: CE(nn @ gather(p).T / T, labels = rank * N + arange(N)),
        # the predictions of all ranks gathered with gradient (as its `gather(p)`).
        forward = _in_batch_infonce(neighbours1, p2, temperature, None, dtype)
        backward = _in_batch_infonce(neighbours2, p1, temperature, None, dtype)
        return (forward + backward) / 2


class NNCLRLoss(nn.Module):
    """`nnclr_loss` with its support set as state: a `MemoryQueue` of `support_size` unit rows.

    forward(z1, z2, p1, p2, update=True) computes the loss against the current support set, then
    (if `update`) enqueues z1, as solo-learn's NNCLR does after each step (its `dequeue_and_enqueue`
    of view 1's projections). The support set is the submodule `support`: its `keys` and `ptr`
    buffers are in this module's `state_dict` (`support.keys`, `support.ptr`).
    support_size: solo-learn's CIFAR recipe uses 65536, the paper 98304. seed fixes the random
    initial rows (the same on every rank).
    """

    def __init__(
        self, support_size: int, dim: int, temperature: float = 0.1, *, seed: int = 0
    ) -> None:
        super().__init__()
        self.temperature = check_temperature("temperature", temperature)
        support_size = check_count("support_size", support_size, 1)
        self.support = MemoryQueue(support_size, dim, seed=seed)

    def forward(
        self, z1: Tensor, z2: Tensor, p1: Tensor, p2: Tensor, update: bool = True
    ) -> Tensor:
        loss = nnclr_loss(z1, z2, p1, p2, self.support.keys, self.temperature)
        if update:
            self.support.enqueue(z1)
        return loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
