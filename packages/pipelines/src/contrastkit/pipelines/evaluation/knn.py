"""Cosine-similarity neighbour search and the weighted kNN classifier used to judge frozen features.

Wu et al. 2018 / solo-learn protocol: top-k neighbours by cosine similarity, votes weighted by exp(sim / T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.pipelines.evaluation.inputs import check_features, check_labels, check_same_space

# Eps for L2 normalisation: a zero feature vector stays zero (similarity 0 to everything).
_NORM_EPS = 1e-12


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_knn_k(
    k: int,
    bank_size: int,
    *,
    k_name: str = "k",
    bank: str = "train samples (rows of train_features)",
    fix: str | None = None,
) -> None:
    """Raise ValueError unless k <= bank_size, naming both numbers and the fix.

    k: neighbours asked for; bank_size: the train samples they are searched among. k_name, bank:
    how the message names them (e.g. "train.knn_k", "training samples in the kNN bank");
    fix: what to do (default: "use {k_name} <= {bank_size}").
    """
    if k > bank_size:
        fix = fix if fix is not None else f"use {k_name} <= {bank_size}"
        raise ValueError(f"{k_name}={k} is larger than the {bank_size} {bank}; {fix}")


def _cosine_topk(
    query_features: Tensor, train_features: Tensor, k: int, chunk_size: int
) -> tuple[Tensor, Tensor]:
    """Top-k cosine similarities of each query to the train set, in float32, chunked over queries.

    Returns (similarities, indices), both (Nq, k), sorted by decreasing similarity.
    """
    train = F.normalize(train_features.float(), dim=1, eps=_NORM_EPS)
    num_queries = query_features.shape[0]
    sims = torch.empty(num_queries, k, dtype=torch.float32, device=train.device)
    indices = torch.empty(num_queries, k, dtype=torch.int64, device=train.device)
    for start in range(0, num_queries, chunk_size):
        stop = min(start + chunk_size, num_queries)
        query = F.normalize(query_features[start:stop].float(), dim=1, eps=_NORM_EPS)
        # Only (chunk, N_train) similarities live at once: 1024 x 50k floats = 200 MB.
        chunk_sims, chunk_indices = (query @ train.T).topk(k, dim=1, largest=True, sorted=True)
        sims[start:stop] = chunk_sims
        indices[start:stop] = chunk_indices
    return sims, indices


def nearest_neighbours(
    query_features: Tensor, train_features: Tensor, k: int = 8, *, chunk_size: int = 1024
) -> Tensor:
    """Indices of the k most cosine-similar train samples of each query, most similar first.

    Args:
        query_features: (Nq, D) float features.
        train_features: (N, D) float features on the same device.
        k: neighbours per query, 1 <= k <= N (ValueError otherwise).
        chunk_size: queries handled per similarity matmul (bounds memory to chunk_size x N).

    Returns:
        (Nq, k) int64 indices into `train_features`, on their device, sorted by decreasing
        cosine similarity (computed in float32 on L2-normalised features).
    """
    check_features("query_features", query_features)
    check_features("train_features", train_features)
    check_same_space("train_features", train_features, "query_features", query_features)
    _check_positive_int("k", k)
    _check_positive_int("chunk_size", chunk_size)
    check_knn_k(k, train_features.shape[0])
    return _cosine_topk(query_features, train_features, k, chunk_size)[1]


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    num_classes: int,
    *,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> Tensor:
    """Weighted-kNN class scores of each query (Wu et al. 2018, as in solo-learn and lightly).

    Each query's k most cosine-similar train samples vote for their class with weight
    exp(sim / temperature). The score of class c is the summed weight of the neighbours of
    class c divided by the summed weight of all k neighbours: the weighted vote share, so each
    row sums to 1. The division changes no prediction and lets the weights be computed as
    exp((sim - max sim) / T), which never overflows float32, whatever the temperature.

    k larger than the number of train samples N is a ValueError naming both (see `check_knn_k`):
    silently voting with fewer neighbours than asked would report a different classifier. A
    caller that wants every train sample to vote passes k=N.

    Args:
        train_features: (N, D) float features of the labelled set.
        train_labels: (N,) integer class indices in [0, num_classes); moved to the features' device.
        query_features: (Nq, D) float features on the same device as `train_features`.
        num_classes: number of classes C.
        k: neighbours per query, 1 <= k <= N.
        temperature: T > 0 of the vote weights.
        chunk_size: queries per similarity matmul; memory is chunk_size x N floats.

    Returns:
        (Nq, C) float32 scores on the features' device, rows summing to 1.
    """
    check_features("train_features", train_features)
    check_features("query_features", query_features)
    check_same_space("train_features", train_features, "query_features", query_features)
    _check_positive_int("num_classes", num_classes)
    check_labels("train_labels", train_labels, train_features.shape[0], num_classes)
    _check_positive_int("k", k)
    _check_positive_int("chunk_size", chunk_size)
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or temperature <= 0
    ):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    if train_features.shape[0] == 0:
        raise ValueError("train_features is empty (shape (0, D)); kNN needs at least one sample")
    check_knn_k(k, train_features.shape[0])

    labels = train_labels.to(device=train_features.device, dtype=torch.int64)
    sims, indices = _cosine_topk(query_features, train_features, k, chunk_size)
    # Rows are sorted, so column 0 is each row's max similarity.
    weights = torch.exp((sims - sims[:, :1]) / temperature)
    scores = torch.zeros(
        query_features.shape[0], num_classes, dtype=torch.float32, device=sims.device
    )
    scores.scatter_add_(1, labels[indices], weights)
    return scores / scores.sum(dim=1, keepdim=True)


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    *,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy (percent, 0..100) of the weighted kNN classifier on a test set.

    Arguments as in `knn_predict`; `test_labels` is (Nt,) integer classes in [0, num_classes).
    Top-5 uses the min(5, C) best classes, so it is 100 when C <= 5. Equal scores rank the
    lower class index first (see `topk_accuracy`).

    Returns:
        {"top1": float, "top5": float}.
    """
    check_features("test_features", test_features)
    _check_positive_int("num_classes", num_classes)
    check_labels("test_labels", test_labels, test_features.shape[0], num_classes)
    if test_features.shape[0] == 0:
        raise ValueError(
            "test_features is empty (shape (0, D)); accuracy needs at least one sample"
        )
    scores = knn_predict(
        train_features,
        train_labels,
        test_features,
        num_classes,
        k=k,
        temperature=temperature,
        chunk_size=chunk_size,
    )
    return topk_accuracy(scores, test_labels)


def topk_accuracy(scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Percent of rows whose true label is among the k highest scores, for each k in `ks`.

    Args:
        scores: (N, C) class scores or logits.
        labels: (N,) integer classes in [0, C).
        ks: the k values; each is clamped to C. Equal scores rank the lower class first.

    Returns:
        {"top1": ..., "top5": ...} (keys f"top{k}"), floats in [0, 100].
    """
    if not isinstance(scores, Tensor) or scores.ndim != 2 or scores.shape[0] == 0:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a non-empty (N, C) tensor, got {shape}")
    check_labels("labels", labels, scores.shape[0], scores.shape[1])
    if not ks:
        raise ValueError("ks must name at least one k, got ()")
    for k in ks:
        _check_positive_int("every entry of ks", k)
    labels = labels.to(device=scores.device, dtype=torch.int64)
    # A stable sort, not topk, so equal scores (e.g. classes no neighbour voted for) rank by
    # class index and the result does not depend on the device's topk implementation.
    ranked = scores.sort(dim=1, descending=True, stable=True).indices[:, : max(ks)]
    hits = ranked == labels[:, None]
    result = {}
    for k in ks:
        correct = hits[:, : min(k, scores.shape[1])].any(dim=1)
        result[f"top{k}"] = 100.0 * correct.float().mean().item()
    return result
