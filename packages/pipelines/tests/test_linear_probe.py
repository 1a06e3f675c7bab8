"""Linear probe: separable toy -> ~100%, random labels -> chance, solvers vs scikit-learn; label fractions."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastkit.pipelines.evaluation.linear_probe import (
    SOLVERS,
    LinearProbeResult,
    label_fraction_indices,
    train_linear_probe,
)


def _clusters(num_train: int, num_test: int, dim: int = 8, num_classes: int = 3, seed: int = 0):
    """Gaussian blobs far apart (plus an offset and scale the standardisation must undo)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator) * 4
    train_y = torch.randint(0, num_classes, (num_train,), generator=generator)
    test_y = torch.randint(0, num_classes, (num_test,), generator=generator)
    train_x = centres[train_y] + torch.randn(num_train, dim, generator=generator)
    test_x = centres[test_y] + torch.randn(num_test, dim, generator=generator)
    return 50 + 10 * train_x, train_y, 50 + 10 * test_x, test_y


def _noise(num_train: int, num_test: int, dim: int = 32, num_classes: int = 4, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(num_train, dim, generator=generator),
        torch.randint(0, num_classes, (num_train,), generator=generator),
        torch.randn(num_test, dim, generator=generator),
        torch.randint(0, num_classes, (num_test,), generator=generator),
    )


@pytest.mark.parametrize("solver", SOLVERS)
def test_separable_clusters_are_classified_perfectly(solver):
    train_x, train_y, test_x, test_y = _clusters(600, 300)
    result = train_linear_probe(train_x, train_y, test_x, test_y, 3, epochs=20, solver=solver)
    assert isinstance(result, LinearProbeResult)
    assert result.top1 >= 99.0
    assert result.top5 == 100.0  # 3 classes: top-5 holds every class
    expected_length = 1 if solver == "closed_form" else 20
    assert [row["epoch"] for row in result.history] == list(range(1, expected_length + 1))
    assert set(result.history[0]) == {"epoch", "train_loss", "val_loss", "val_top1", "val_top5"}


@pytest.mark.parametrize("solver", SOLVERS)
def test_random_labels_give_chance_accuracy(solver):
    train_x, train_y, test_x, test_y = _noise(1000, 2000)
    result = train_linear_probe(train_x, train_y, test_x, test_y, 4, epochs=20, solver=solver)
    # Chance is 25%; the binomial std over 2000 test samples is ~1%.
    assert 20.0 < result.top1 < 30.0


def test_result_keeps_the_train_standardisation_and_reproduces_its_accuracy():
    train_x, train_y, test_x, test_y = _clusters(300, 200)
    result = train_linear_probe(train_x, train_y, test_x, test_y, 3, epochs=5)
    torch.testing.assert_close(result.feature_mean, train_x.mean(dim=0))
    torch.testing.assert_close(result.feature_std, train_x.std(dim=0, unbiased=False))
    standardised = result.standardize(test_x)
    torch.testing.assert_close(standardised.mean(dim=0), torch.zeros(8), atol=0.3, rtol=0)
    logits = result.logits(test_x)
    torch.testing.assert_close(logits, result.classifier(standardised).detach())
    top1 = 100 * (logits.argmax(dim=1) == test_y).float().mean().item()
    assert top1 == pytest.approx(result.top1)
    assert result.history[-1]["val_loss"] == pytest.approx(
        F.cross_entropy(logits, test_y).item(), rel=1e-5
    )


def _correlated(num_train: int, num_test: int, dim: int = 10, seed: int = 1):
    """Features mixed by a rotation after scaling axes 1..100: ill-conditioned even once
    standardised, the case where a stalling L-BFGS shows; labels from two latent axes."""
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(num_train + num_test, dim, generator=generator)
    rotation = torch.linalg.qr(torch.randn(dim, dim, generator=generator)).Q
    features = latent @ torch.diag(torch.logspace(0, 2, dim)) @ rotation
    noisy = latent[:, 0] + 0.5 * torch.randn(num_train + num_test, generator=generator)
    labels = (noisy > 0).long() + (latent[:, 1] > 0).long()
    return (
        features[:num_train],
        labels[:num_train],
        features[num_train:],
        labels[num_train:],
    )


def test_lbfgs_reaches_scikit_learns_regularised_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    train_x, train_y, test_x, test_y = _correlated(400, 300)
    weight_decay = 1e-3
    result = train_linear_probe(
        train_x, train_y, test_x, test_y, 3, solver="lbfgs", epochs=20, weight_decay=weight_decay
    )
    # Ours: mean CE + wd/2 ||W||^2; scikit-learn: C * sum CE + 1/2 ||W||^2 -> C = 1 / (wd N).
    reference = LogisticRegression(C=1 / (weight_decay * 400), max_iter=5000, tol=1e-10)
    reference.fit(result.standardize(train_x).double().numpy(), train_y.numpy())
    ours = torch.softmax(result.logits(test_x), dim=1).numpy()
    theirs = reference.predict_proba(result.standardize(test_x).double().numpy())
    np.testing.assert_allclose(ours, theirs, atol=2e-3)


def test_closed_form_equals_scikit_learns_ridge():
    from sklearn.linear_model import Ridge

    train_x, train_y, test_x, test_y = _noise(300, 100, dim=12)
    weight_decay = 0.05
    result = train_linear_probe(
        train_x, train_y, test_x, test_y, 4, solver="closed_form", weight_decay=weight_decay
    )
    # Ours: 1/(2N) ||XW + b - Y||^2 + wd/2 ||W||^2 -> Ridge's alpha = N wd, intercept unpenalised.
    reference = Ridge(alpha=weight_decay * 300).fit(
        result.standardize(train_x).double().numpy(), F.one_hot(train_y, 4).double().numpy()
    )
    np.testing.assert_allclose(
        result.classifier.weight.detach().numpy(), reference.coef_, atol=1e-5
    )
    np.testing.assert_allclose(
        result.classifier.bias.detach().numpy(), reference.intercept_, atol=1e-5
    )


def test_closed_form_without_penalty_handles_more_dimensions_than_samples():
    train_x, train_y, test_x, test_y = _clusters(20, 50, dim=40)
    result = train_linear_probe(train_x, train_y, test_x, test_y, 3, solver="closed_form")
    assert torch.isfinite(result.classifier.weight).all()
    assert result.top1 >= 90.0


def test_sgd_is_seeded_and_its_train_loss_falls():
    train_x, train_y, test_x, test_y = _clusters(300, 100, seed=3)
    first = train_linear_probe(train_x, train_y, test_x, test_y, 3, epochs=8, seed=5)
    again = train_linear_probe(train_x, train_y, test_x, test_y, 3, epochs=8, seed=5)
    other = train_linear_probe(train_x, train_y, test_x, test_y, 3, epochs=8, seed=6)
    assert first.history == again.history
    torch.testing.assert_close(first.classifier.weight, again.classifier.weight)
    assert not torch.equal(first.classifier.weight, other.classifier.weight)
    losses = [row["train_loss"] for row in first.history]
    assert losses[-1] < 0.5 * losses[0]


def test_constant_feature_is_centred_not_divided_by_zero():
    train_x, train_y, test_x, test_y = _clusters(200, 100)
    train_x[:, 0] = 3.0
    test_x[:, 0] = 4.0
    result = train_linear_probe(train_x, train_y, test_x, test_y, 3, epochs=5)
    assert result.feature_std[0] == 1.0
    assert torch.isfinite(result.standardize(test_x)).all() and result.top1 >= 99.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"solver": "adam"}, "solver must be one of"),
        ({"num_classes": 1}, "num_classes must be an int >= 2"),
        ({"epochs": 0}, "epochs must be a positive int"),
        ({"lr": -0.1}, "lr must be a finite number > 0"),
        ({"weight_decay": -1.0}, "weight_decay must be a finite number >= 0"),
        ({"test_features": torch.randn(100, 7)}, "test_features has feature dimension 7"),
        ({"train_labels": torch.full((200,), 3)}, r"train_labels must lie in \[0, 3\)"),
        ({"test_labels": torch.zeros(99, dtype=torch.int64)}, "test_labels must have shape"),
    ],
)
def test_bad_inputs_raise_value_errors(kwargs, message):
    train_x, train_y, test_x, test_y = _clusters(200, 100)
    arguments = {
        "train_features": train_x,
        "train_labels": train_y,
        "test_features": test_x,
        "test_labels": test_y,
        "num_classes": 3,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        train_linear_probe(**arguments)


def _unbalanced_labels() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([100, 50, 30, 3])])
    return labels[torch.randperm(labels.shape[0], generator=generator)]


@pytest.mark.parametrize(
    ("fraction", "per_class"),
    [(0.01, [1, 1, 1, 1]), (0.1, [10, 5, 3, 1]), (0.5, [50, 25, 15, 2]), (1.0, [100, 50, 30, 3])],
)
def test_label_fraction_keeps_the_same_share_of_every_class(fraction, per_class):
    labels = _unbalanced_labels()
    indices = label_fraction_indices(labels, fraction, seed=0)
    assert indices.dtype == torch.int64
    assert indices.tolist() == sorted(set(indices.tolist()))  # sorted, no repeats
    counts = Counter(labels[indices].tolist())
    assert [counts[c] for c in range(4)] == per_class


def test_label_fraction_is_seeded():
    labels = _unbalanced_labels()
    first = label_fraction_indices(labels, 0.1, seed=7)
    assert torch.equal(first, label_fraction_indices(labels, 0.1, seed=7))
    assert not torch.equal(first, label_fraction_indices(labels, 0.1, seed=8))


@pytest.mark.parametrize(
    ("labels", "fraction", "message"),
    [
        (torch.zeros(10, dtype=torch.int64), 0.0, r"fraction must be a number in \(0, 1\]"),
        (torch.zeros(10, dtype=torch.int64), 1.5, r"fraction must be a number in \(0, 1\]"),
        (torch.zeros(10), 0.5, "labels must be an integer tensor"),
        (torch.zeros(2, 5, dtype=torch.int64), 0.5, "labels must be a 1-D tensor"),
    ],
)
def test_label_fraction_rejects_bad_inputs(labels, fraction, message):
    with pytest.raises(ValueError, match=message):
        label_fraction_indices(labels, fraction, seed=0)
