"""All-gather and all-reduce across torch.distributed ranks, with and without a gradient path back to each rank.

Used by the in-batch losses (global negatives), the batch-statistics losses (global sums), the
multi-crop losses' state and codes (DINO's centre, SwAV's Sinkhorn) and by MemoryQueue (every rank
holds the same queue). Without a process group (or with one rank) every helper returns its input.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> tuple[int, int]:
    """(rank, world_size) of the default process group; (0, 1) when torch.distributed is not initialized."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(x: Tensor, world_size: int) -> Tensor:
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def _reduced_copy(x: Tensor, op: Literal["sum", "max"] = "sum") -> Tensor:
    """A contiguous copy of `x` reduced element-wise over ranks (the same tensor on every rank).

    A copy, never `x` itself: the input may be a buffer that other graph nodes share.
    """
    total = x.clone(memory_format=torch.contiguous_format)
    dist.all_reduce(total, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return total


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: concatenate every rank's (n, ...) tensor into (world_size * n, ...), rank order.

    Backward: every rank's loss may depend on every slice, so the gradient of this rank's slice is
    the SUM over ranks of the gradients w.r.t. that slice: all_reduce(SUM), then keep our slice.
    (Returning only the local gradient, or averaging it, is the bug of lightly#1528.)
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        rank, world_size = world()
        ctx.rank = rank
        ctx.n = x.shape[0]
        return _gather(x, world_size)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _reduced_copy(grad)[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


class _AllReduceSumWithGrad(torch.autograd.Function):
    """Forward: the element-wise sum of `x` over ranks (every rank gets the same tensor).

    Backward: every rank's loss depends on the sum, so the gradient of this rank's `x` is the SUM
    over ranks of the gradients w.r.t. the sum: all_reduce(SUM) again. A plain
    `dist.all_reduce` records nothing for autograd, so each rank would keep only its own loss's
    gradient, 1/world_size of the full-batch gradient after DDP averages (lightly#1977).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return _reduced_copy(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _reduced_copy(grad)


def all_gather_with_grad(x: Tensor) -> Tensor:
    """(n, ...) on each rank -> (world_size * n, ...) in rank order, differentiable.

    Every rank must pass the same shape. Without an initialized process group (or with one rank)
    this returns `x` itself.
    """
    _, world_size = world()
    if world_size == 1:
        return x
    return _AllGatherWithGrad.apply(x)


def all_gather_no_grad(x: Tensor) -> Tensor:
    """Like `all_gather_with_grad` but detached: for values that only feed state (queues)."""
    _, world_size = world()
    if world_size == 1:
        return x
    with torch.no_grad():
        return _gather(x, world_size)


def all_reduce_sum_with_grad(x: Tensor) -> Tensor:
    """Element-wise sum of `x` over ranks (same shape on every rank), differentiable.

    The backward sums the gradient over ranks too, so DDP's gradient average gives the gradient
    of the full-batch loss. Without an initialized process group (or with one rank) this returns
    `x` itself.
    """
    _, world_size = world()
    if world_size == 1:
        return x
    return _AllReduceSumWithGrad.apply(x)


def all_reduce_no_grad(x: Tensor, op: Literal["sum", "max"] = "sum") -> Tensor:
    """Element-wise sum (or max) of `x` over ranks, detached: for state and no-grad statistics.

    Returns a new tensor (the input is left as it is); without an initialized process group (or
    with one rank) `x` itself.
    """
    if op not in ("sum", "max"):
        raise ValueError(f"op must be 'sum' or 'max', got {op!r}")
    _, world_size = world()
    if world_size == 1:
        return x
    with torch.no_grad():
        return _reduced_copy(x.detach(), op)
