"""Projection, prediction and linear heads: shapes, parameter counts by formula, layouts, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastkit.backbones import LinearClassifier, PredictionHead, ProjectionHead


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_projection_head_shape_and_parameter_count(num_layers: int, batch_norm: bool) -> None:
    d_in, d_hidden, d_out = 512, 2048, 128
    head = ProjectionHead(d_in, d_hidden, d_out, num_layers=num_layers, batch_norm=batch_norm)
    per_hidden = 2 * d_hidden if batch_norm else d_hidden  # BN (weight, bias) or Linear bias
    if num_layers == 1:
        expected = d_in * d_out + d_out
    else:
        expected = (
            d_in * d_hidden
            + per_hidden
            + (num_layers - 2) * (d_hidden * d_hidden + per_hidden)
            + d_hidden * d_out
            + d_out
        )
    assert _n_params(head) == expected
    assert head(torch.randn(4, d_in)).shape == (4, d_out)
    n_bn = sum(isinstance(m, nn.BatchNorm1d) for m in head.modules())
    assert n_bn == (num_layers - 1 if batch_norm else 0)


def test_projection_head_computes_linear_bn_relu_linear() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(8, 16, 4).train()
    x = torch.randn(6, 8)
    first, bn, _, last = head.layers
    h = x @ first.weight.T
    h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias
    expected = torch.relu(h) @ last.weight.T + last.bias
    torch.testing.assert_close(head(x), expected, rtol=1e-5, atol=1e-5)


def test_prediction_head_layout_shape_and_count() -> None:
    head = PredictionHead(256, 4096, 256)
    kinds = [type(m) for m in head.layers]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert _n_params(head) == 256 * 4096 + 2 * 4096 + 4096 * 256 + 256
    assert head(torch.randn(3, 256)).shape == (3, 256)


def test_linear_classifier_shape_count_and_value() -> None:
    clf = LinearClassifier(512, 10)
    assert _n_params(clf) == 512 * 10 + 10
    x = torch.randn(5, 512)
    torch.testing.assert_close(clf(x), x @ clf.linear.weight.T + clf.linear.bias)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ProjectionHead(0, 16, 4), "in_dim must be a positive int, got 0"),
        (lambda: ProjectionHead(8, -1, 4), "hidden_dim must be a positive int, got -1"),
        (lambda: ProjectionHead(8, 16, 4, num_layers=0), "num_layers must be a positive int"),
        (lambda: ProjectionHead(8, 16, 4, batch_norm=1), "batch_norm must be a bool"),
        (lambda: PredictionHead(8, 16, 2.5), "out_dim must be a positive int, got 2.5"),
        (lambda: LinearClassifier(8, 0), "num_classes must be a positive int, got 0"),
    ],
)
def test_bad_head_arguments(build, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "head", [ProjectionHead(8, 16, 4), PredictionHead(8, 16, 4), LinearClassifier(8, 4)]
)
def test_heads_reject_wrong_feature_width(head: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"\(N, 8\), got \(2, 9\)"):
        head(torch.randn(2, 9))
