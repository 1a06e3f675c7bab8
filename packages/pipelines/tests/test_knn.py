"""Weighted kNN and cosine neighbour search against brute-force loops and scikit-learn."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from shared_data import require_shared_data

from contrastkit.pipelines.evaluation.knn import (
    check_knn_k,
    knn_accuracy,
    knn_predict,
    nearest_neighbours,
    topk_accuracy,
)

DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def _toy(
    num_train: int = 53, num_query: int = 29, dim: int = 6, num_classes: int = 7, seed: int = 0
):
    generator = torch.Generator().manual_seed(seed)
    train = torch.randn(num_train, dim, generator=generator)
    labels = torch.randint(0, num_classes, (num_train,), generator=generator)
    query = torch.randn(num_query, dim, generator=generator)
    query_labels = torch.randint(0, num_classes, (num_query,), generator=generator)
    return train, labels, query, query_labels


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _brute_force_scores(train, labels, query, num_classes, k, temperature):
    """Plain Python: sort train samples by cosine similarity, vote exp(sim/T), share of votes."""
    train_rows, label_list = train.double().tolist(), labels.tolist()
    scores = []
    for q in query.double().tolist():
        sims = sorted(
            ((_cosine(q, t), label_list[i]) for i, t in enumerate(train_rows)), reverse=True
        )[: min(k, len(train_rows))]
        votes = [0.0] * num_classes
        for sim, label in sims:
            votes[label] += math.exp(sim / temperature)
        total = sum(votes)
        scores.append([v / total for v in votes])
    return torch.tensor(scores, dtype=torch.float64)


@pytest.mark.parametrize("k", [1, 5, 17, 53])
@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
def test_knn_predict_matches_brute_force_loop(k, chunk_size):
    train, labels, query, _ = _toy()
    scores = knn_predict(train, labels, query, 7, k=k, temperature=0.1, chunk_size=chunk_size)
    expected = _brute_force_scores(train, labels, query, 7, k, 0.1)
    assert scores.shape == (29, 7) and scores.dtype == torch.float32
    torch.testing.assert_close(scores.double(), expected, atol=2e-5, rtol=1e-4)


def test_knn_predict_small_temperature_does_not_overflow():
    # exp(1 / 0.005) = exp(200) overflows float32; vote shares must stay exact.
    train, labels, query, _ = _toy()
    scores = knn_predict(train, labels, query, 7, k=10, temperature=0.005)
    assert torch.isfinite(scores).all()
    expected = _brute_force_scores(train, labels, query, 7, 10, 0.005)
    torch.testing.assert_close(scores.double(), expected, atol=1e-4, rtol=1e-3)


def test_k_larger_than_train_set_is_an_error_naming_both():
    train, labels, query, query_labels = _toy()
    message = r"^k=54 is larger than the 53 train samples \(rows of train_features\); use k <= 53$"
    with pytest.raises(ValueError, match=message):
        knn_predict(train, labels, query, 7, k=54)
    with pytest.raises(ValueError, match=message):
        knn_accuracy(train, labels, query, query_labels, 7, k=54)
    # k = N, every train sample votes, is allowed and equals the brute-force vote.
    expected = _brute_force_scores(train, labels, query, 7, 53, 0.1)
    torch.testing.assert_close(
        knn_predict(train, labels, query, 7, k=53).double(), expected, atol=1e-4, rtol=1e-3
    )


def test_check_knn_k_names_what_the_caller_names():
    check_knn_k(128, 128)
    with pytest.raises(
        ValueError,
        match=r"^train\.knn_k=129 is larger than the 128 images in the bank; lower train\.knn_k$",
    ):
        check_knn_k(
            129, 128, k_name="train.knn_k", bank="images in the bank", fix="lower train.knn_k"
        )


@pytest.mark.parametrize("k", [1, 3, 20])
@pytest.mark.parametrize("chunk_size", [4, 1024])
def test_knn_accuracy_matches_brute_force_counts(k, chunk_size):
    train, labels, query, query_labels = _toy(num_query=41)
    result = knn_accuracy(train, labels, query, query_labels, 7, k=k, chunk_size=chunk_size)
    expected = _brute_force_scores(train, labels, query, 7, k, 0.1)
    top1 = top5 = 0
    for row, label in zip(expected.tolist(), query_labels.tolist(), strict=True):
        ranked = sorted(range(7), key=lambda c: -row[c])
        top1 += ranked[0] == label
        top5 += label in ranked[:5]
    assert result["top1"] == pytest.approx(100 * top1 / 41)
    assert result["top5"] == pytest.approx(100 * top5 / 41)


def test_knn_accuracy_is_100_on_separated_clusters_and_top5_is_100_with_few_classes():
    generator = torch.Generator().manual_seed(1)
    centres = torch.eye(3) * 10
    train_labels = torch.arange(90) % 3
    test_labels = torch.arange(30) % 3
    train = centres[train_labels] + torch.randn(90, 3, generator=generator)
    test = centres[test_labels] + torch.randn(30, 3, generator=generator)
    assert knn_accuracy(train, train_labels, test, test_labels, 3, k=20) == {
        "top1": 100.0,
        "top5": 100.0,
    }
    flipped = knn_accuracy(train, (train_labels + 1) % 3, test, test_labels, 3, k=20)
    assert flipped["top1"] == 0.0 and flipped["top5"] == 100.0


def test_half_precision_features_give_float32_scores():
    train, labels, query, _ = _toy()
    scores = knn_predict(train.bfloat16(), labels, query.bfloat16(), 7, k=5)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(29))


def test_topk_accuracy_by_hand():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])
    labels = torch.tensor([1, 1, 0, 2])
    # Label rank per row: 1st, 2nd, 3rd, 2nd -> top-1 hits 1 of 4, top-2 hits 3 of 4.
    assert topk_accuracy(scores, labels, ks=(1, 2, 5)) == {
        "top1": 25.0,
        "top2": 75.0,
        "top5": 100.0,
    }


@pytest.mark.parametrize("k", [1, 8])
@pytest.mark.parametrize("chunk_size", [3, 1024])
def test_nearest_neighbours_match_brute_force(k, chunk_size):
    train, _, query, _ = _toy()
    found = nearest_neighbours(query, train, k=k, chunk_size=chunk_size)
    assert found.shape == (29, k) and found.dtype == torch.int64
    for row, q in enumerate(query.double().tolist()):
        sims = [_cosine(q, t) for t in train.double().tolist()]
        expected = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        assert found[row].tolist() == expected


def test_one_neighbour_knn_agrees_with_scikit_learn_on_real_cifar_pixels():
    folder = DATA / "cifar10"
    require_shared_data(folder / "cifar10_test.npz", what="real CIFAR-10")
    from sklearn.neighbors import KNeighborsClassifier

    with np.load(folder / "cifar10_train_1.npz") as train_file:
        train_x, train_y = train_file["x"][:2000], train_file["y"][:2000]
    with np.load(folder / "cifar10_test.npz") as test_file:
        test_x, test_y = test_file["x"][:300], test_file["y"][:300]
    train = torch.from_numpy(train_x.reshape(2000, -1).astype(np.float32))
    test = torch.from_numpy(test_x.reshape(300, -1).astype(np.float32))
    # Centre the pixels so cosine similarity is not dominated by overall brightness.
    mean = train.mean(dim=0)
    train, test = train - mean, test - mean

    scores = knn_predict(train, torch.from_numpy(train_y), test, 10, k=1)
    reference = KNeighborsClassifier(n_neighbors=1, metric="cosine", algorithm="brute")
    reference.fit(train.numpy(), train_y)
    assert scores.argmax(dim=1).numpy().tolist() == reference.predict(test.numpy()).tolist()
    accuracy = knn_accuracy(train, torch.from_numpy(train_y), test, torch.from_numpy(test_y), 10)
    # Raw pixels: well above chance (10%), far below learned features (cs231n: ~25-40%).
    assert 18.0 < accuracy["top1"] < 45.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query_features": torch.randn(4, 5)}, "feature dimension 5"),
        ({"train_labels": torch.tensor([0, 1, 2])}, "train_labels must have shape"),
        ({"train_labels": torch.full((53,), 7)}, r"\[0, 7\)"),
        ({"train_labels": torch.zeros(53)}, "integer tensor"),
        ({"k": 0}, "k must be a positive int"),
        ({"temperature": 0.0}, "temperature must be a number > 0"),
        ({"chunk_size": -1}, "chunk_size"),
        ({"num_classes": 0}, "num_classes"),
        ({"train_features": torch.randn(53)}, r"shape \(N, D\)"),
        ({"train_features": torch.zeros(53, 6, dtype=torch.int64)}, "floating-point"),
    ],
)
def test_knn_predict_rejects_bad_inputs(kwargs, message):
    train, labels, query, _ = _toy()
    arguments = {
        "train_features": train,
        "train_labels": labels,
        "query_features": query,
        "num_classes": 7,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        knn_predict(**arguments)


def test_nearest_neighbours_rejects_k_above_train_size():
    train, _, query, _ = _toy()
    with pytest.raises(ValueError, match=r"k=54 is larger than the 53 train samples"):
        nearest_neighbours(query, train, k=54)
