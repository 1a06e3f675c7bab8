"""All-gather across torch.distributed ranks, with and without a gradient path back to each rank.

Used by the in-batch losses (global negatives) and by MemoryQueue (every rank holds the same queue).
"""

from __future__ import annotations

from typing import Any

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
        # Clone: the incoming gradient buffer may be shared with other graph nodes.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


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
