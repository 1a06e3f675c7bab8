"""Statistics of the global batch (all ranks): the parts Barlow Twins and VICReg share.

Both losses standardise or decorrelate features with statistics of the whole multi-rank batch, so
every rank's loss depends on every rank's embeddings (the sums go through
`distributed.all_reduce_sum_with_grad` or `all_gather_with_grad`, which carry that dependence back).
"""

from __future__ import annotations

from torch import Tensor

from contrastkit.objectives._validation import check_embeddings, check_same_shape
from contrastkit.objectives.distributed import world


def check_views_for_batch_statistics(z1: object, z2: object) -> int:
    """Raise unless z1, z2 are (N, D) tensors of one shape with >= 2 rows over all ranks.

    Returns the global batch size N * world_size (every rank passes the same N).
    """
    check_embeddings("z1", z1)
    check_embeddings("z2", z2)
    check_same_shape("z1", z1, "z2", z2)
    _, world_size = world()
    total = z1.shape[0] * world_size
    if total < 2:
        raise ValueError(
            f"z1 must have at least 2 rows over all ranks for batch statistics, "
            f"got N = {z1.shape[0]} on {world_size} rank(s)"
        )
    return total


def off_diagonal_square_sum(matrix: Tensor) -> Tensor:
    """`sum_{i != j} m_ij^2` of a square matrix, as `||m||_F^2 - sum_i m_ii^2` (no (D, D) mask)."""
    return matrix.square().sum() - matrix.diagonal().square().sum()
