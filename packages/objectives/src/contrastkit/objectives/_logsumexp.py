"""Row-wise log-sum-exp of a similarity matrix, `log sum_j exp(a_i . b_j)`, with a hand-written backward.

Every softmax loss here is `lse_i - (target logit)_i`; the target logit is an (N, D) dot product, so
the (N, M) similarity matrix is only ever needed inside this function, and it keeps just one copy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from contrastkit.objectives._validation import autocast_disabled


class _SimilarityLogSumExp(torch.autograd.Function):
    """Forward keeps exp(s - rowmax) in the matmul's own buffer (no second (N, M) tensor); backward
    folds the softmax normalisation into an (N,) row scale, so it needs no (N, M) temporary either.
    """

    @staticmethod
    def forward(ctx: Any, anchors: Tensor, keys: Tensor, excluded: Tensor | None) -> Tensor:
        scores = anchors @ keys.T  # (N, M)
        if excluded is not None:
            scores.scatter_(1, excluded.unsqueeze(1), float("-inf"))
        row_max = scores.amax(dim=1, keepdim=True)
        exp_scores = scores.sub_(row_max).exp_()  # in place: the only (N, M) buffer
        row_sum = exp_scores.sum(dim=1)
        ctx.save_for_backward(anchors, keys, exp_scores, row_sum)
        return row_max.squeeze(1) + row_sum.log()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        anchors, keys, exp_scores, row_sum = ctx.saved_tensors
        # d lse_i / d s_ij = softmax_ij = exp_scores_ij / row_sum_i; fold grad_i / row_sum_i into a row scale.
        scale = (grad / row_sum).unsqueeze(1)
        grad_anchors = grad_keys = None
        with autocast_disabled(anchors.device):
            if ctx.needs_input_grad[0]:
                grad_anchors = (exp_scores @ keys) * scale
            if ctx.needs_input_grad[1]:
                grad_keys = exp_scores.T @ (anchors * scale)
        return grad_anchors, grad_keys, None


def similarity_logsumexp(anchors: Tensor, keys: Tensor, excluded: Tensor | None = None) -> Tensor:
    """`lse_i = log sum_j exp(anchors_i . keys_j)`, skipping column `excluded[i]` of row i if given.

    anchors: (N, D), keys: (M, D), same floating dtype (callers pass float32 or float64 and have
    autocast disabled); excluded: (N,) int64 column indices or None. Returns (N,) in that dtype.
    Memory: one (N, M) buffer is kept from forward to backward; nothing else of that size.
    """
    return _SimilarityLogSumExp.apply(anchors, keys, excluded)
