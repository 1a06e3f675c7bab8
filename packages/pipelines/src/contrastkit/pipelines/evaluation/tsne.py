"""2-D t-SNE embedding of a seeded, class-stratified sample of features (scikit-learn's TSNE).

Computed here, drawn by `plots.plot_tsne`: the embedding can be used or tested without drawing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.pipelines.evaluation.inputs import check_features, check_labels


@dataclass
class TsneEmbedding:
    """Result of `tsne_embedding`.

    Attributes:
        points: (M, 2) float32 t-SNE coordinates, row i for sample `indices[i]`.
        indices: (M,) int64 indices into the features given, ascending.
        labels: (M,) int64 class of each point.
    """

    points: np.ndarray
    indices: np.ndarray
    labels: np.ndarray


def _stratified_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Seeded sample of exactly `size` indices with class shares as in `labels`.

    Each class c of n_c samples gets floor(size * n_c / N) places; the places left over go to
    the classes with the largest remainders (ties: lower class first). Within a class the
    samples are drawn uniformly without replacement by numpy's PCG64 seeded with `seed`.

    Args:
        labels: (N,) integer labels.
        size: 1 <= size <= N.
        seed: the draw's seed.

    Returns:
        (size,) int64 indices, ascending.
    """
    total = labels.shape[0]
    if not 1 <= size <= total:
        raise ValueError(f"size must be in [1, {total}] for {total} labels, got {size}")
    classes, counts = np.unique(labels, return_counts=True)
    exact = size * counts / total
    quota = np.floor(exact).astype(np.int64)
    leftover = size - int(quota.sum())
    # Stable sort on the negated remainder: largest first, lower class first among equals.
    quota[np.argsort(-(exact - quota), kind="stable")[:leftover]] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(labels == cls), size=int(n), replace=False)
        for cls, n in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def tsne_embedding(
    features: Tensor,
    labels: Tensor,
    *,
    max_points: int = 5000,
    seed: int = 0,
    perplexity: float = 30.0,
    normalize: bool = True,
) -> TsneEmbedding:
    """t-SNE of at most `max_points` features, sampled class-stratified and seeded.

    Args:
        features: (N, D) float features (any device; copied to the CPU).
        labels: (N,) integer classes (used for the stratified sample and returned per point).
        max_points: sample size cap (>= 2); all N are used when N <= max_points.
        seed: seeds both the sample and TSNE (random_state), so a rerun gives the same picture.
        perplexity: TSNE perplexity, lowered to M - 1 for tiny samples (TSNE requires < M).
        normalize: L2-normalise features first, so distances follow the cosine similarity the
            contrastive objectives train.

    Returns:
        TsneEmbedding(points (M, 2), indices (M,), labels (M,)).
    """
    check_features("features", features)
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    num_classes = int(labels.max()) + 1 if labels.numel() else 1
    check_labels("labels", labels, features.shape[0], num_classes)
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise ValueError(f"max_points must be an int >= 2, got {max_points!r}")
    if features.shape[0] < 2:
        raise ValueError(
            f"t-SNE needs at least 2 samples, got features of shape {tuple(features.shape)}"
        )
    if isinstance(perplexity, bool) or not isinstance(perplexity, int | float) or perplexity <= 0:
        raise ValueError(f"perplexity must be a number > 0, got {perplexity!r}")

    # scikit-learn is imported here, not at module import: it takes about a second.
    from sklearn.manifold import TSNE

    all_labels = labels.cpu().numpy().astype(np.int64)
    size = min(max_points, features.shape[0])
    indices = _stratified_sample(all_labels, size, seed)
    sample = features[torch.from_numpy(indices).to(features.device)].float()
    if normalize:
        sample = F.normalize(sample, dim=1, eps=1e-12)
    tsne = TSNE(
        n_components=2,
        perplexity=min(float(perplexity), size - 1.0),
        init="pca",
        random_state=seed,
    )
    points = tsne.fit_transform(sample.cpu().numpy()).astype(np.float32)
    return TsneEmbedding(points=points, indices=indices, labels=all_labels[indices])
