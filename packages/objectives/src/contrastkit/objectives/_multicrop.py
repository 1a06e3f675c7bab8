"""The multi-crop cross-entropy that DINO and SwAV share, and the checks on their lists of crops.

Both losses average `-sum_k q_k log p_k` over every pair (target crop t, predicting crop v != t).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from contrastkit.objectives._validation import check_embeddings, check_same_device


def check_crops(name: str, crops: object, shape: str = "(N, K)") -> list[Tensor]:
    """Raise unless `crops` is a non-empty list/tuple of floating tensors of one `shape`; return it."""
    if isinstance(crops, Tensor) or not isinstance(crops, Sequence):
        raise ValueError(
            f"{name} must be a list or tuple of {shape} tensors, one per crop, "
            f"got {type(crops).__name__}"
        )
    if len(crops) == 0:
        raise ValueError(f"{name} must hold at least one {shape} tensor, got an empty sequence")
    crops = list(crops)
    for i, crop in enumerate(crops):
        check_embeddings(f"{name}[{i}]", crop, shape)
    for i, crop in enumerate(crops[1:], start=1):
        check_same_device(f"{name}[0]", crops[0], f"{name}[{i}]", crop)
        if crop.shape != crops[0].shape:
            raise ValueError(
                f"every tensor of {name} must have the shape of {name}[0] "
                f"{tuple(crops[0].shape)}, got {name}[{i}] of shape {tuple(crop.shape)}"
            )
    return crops


def cross_crop_cross_entropy(
    targets: Sequence[Tensor], target_crops: Sequence[int], log_probs: Sequence[Tensor]
) -> Tensor:
    """Mean over the pairs (t, v != target_crops[t]) of the batch mean of `-sum_k q_t log p_v`.

    targets: T target distributions (N, K) (no gradient flows into them); target_crops: the crop
    index of each target; log_probs: S log-probabilities (N, K), one per crop. Each pair's term is
    averaged over the N rows, the T * (S - 1) pair terms are averaged with equal weight (as both
    DINO's `total_loss /= n_loss_terms` and SwAV's `subloss / (S - 1)` then `/ len(crops_for_assign)`).
    """
    # sum_{v != t} q_t . log p_v = q_t . (sum_v log p_v - log p_t): one (N, K) product per target.
    all_crops = log_probs[0]
    for log_p in log_probs[1:]:
        all_crops = all_crops + log_p
    total = 0.0
    for q, crop in zip(targets, target_crops, strict=True):
        total = total - (q * (all_crops - log_probs[crop])).sum()
    pairs = len(targets) * (len(log_probs) - 1)
    return total / (pairs * log_probs[0].shape[0])
