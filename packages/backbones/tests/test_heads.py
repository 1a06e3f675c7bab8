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
@pytest.mark.parametrize("output_batch_norm", [False, True])
def test_projection_head_shape_and_parameter_count(
    num_layers: int, batch_norm: bool, output_batch_norm: bool
) -> None:
    d_in, d_hidden, d_out = 512, 2048, 128
    head = ProjectionHead(
        d_in,
        d_hidden,
        d_out,
        num_layers=num_layers,
        batch_norm=batch_norm,
        output_batch_norm=output_batch_norm,
    )
    per_hidden = 2 * d_hidden if batch_norm else d_hidden  # BN (weight, bias) or Linear bias
    per_out = 2 * d_out if output_batch_norm else d_out  # the same for the last layer
    if num_layers == 1:
        expected = d_in * d_out + per_out
    else:
        expected = (
            d_in * d_hidden
            + per_hidden
            + (num_layers - 2) * (d_hidden * d_hidden + per_hidden)
            + d_hidden * d_out
            + per_out
        )
    assert _n_params(head) == expected
    assert head(torch.randn(4, d_in)).shape == (4, d_out)
    n_bn = sum(isinstance(m, nn.BatchNorm1d) for m in head.modules())
    assert n_bn == (num_layers - 1 if batch_norm else 0) + int(output_batch_norm)


def test_imix_mlpbn_head_count() -> None:
    # i-Mix's `mlpbn` on a 2048-feature encoder (builder.py: Linear 2048->2048, BN, ReLU,
    # Linear 2048->128, BN(128)) has 4,462,976 parameters with its two pre-BN biases; ours
    # drops those biases (2048 + 128), which the BatchNorms cancel anyway.
    head = ProjectionHead(2048, 2048, 128, output_batch_norm=True)
    assert _n_params(head) == 4_462_976 - 2048 - 128


def test_projection_head_computes_linear_bn_relu_linear() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(8, 16, 4).train()
    x = torch.randn(6, 8)
    first, bn, _, last = head.layers
    h = x @ first.weight.T
    h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias
    expected = torch.relu(h) @ last.weight.T + last.bias
    torch.testing.assert_close(head(x), expected, rtol=1e-5, atol=1e-5)


def _batch_norm(h: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
    """Training-mode BatchNorm1d by hand: standardise over the batch with the biased variance."""
    return (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias


def test_projection_head_output_batch_norm_computes_imix_mlpbn() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(8, 16, 4, output_batch_norm=True).train()
    assert [type(m) for m in head.layers] == [
        nn.Linear,
        nn.BatchNorm1d,
        nn.ReLU,
        nn.Linear,
        nn.BatchNorm1d,
    ]
    with torch.no_grad():  # a non-trivial affine so that the test sees gamma and beta
        head.layers[4].weight.uniform_(0.5, 2.0)
        head.layers[4].bias.uniform_(-1.0, 1.0)
    x = torch.randn(6, 8)
    first, bn, _, last, out_bn = head.layers
    assert first.bias is None and last.bias is None
    h = torch.relu(_batch_norm(x @ first.weight.T, bn))
    expected = _batch_norm(h @ last.weight.T, out_bn)
    torch.testing.assert_close(head(x), expected, rtol=1e-5, atol=1e-5)


def test_projection_head_output_without_affine_or_bias_is_moco_v3s() -> None:
    # SimSiam / MoCo v3: BatchNorm1d(out_dim, affine=False) on the output; MoCo v3's last Linear
    # has no bias even without that BatchNorm.
    torch.manual_seed(0)
    head = ProjectionHead(8, 16, 4, output_batch_norm=True, output_affine=False).train()
    first, bn, _, last, out_bn = head.layers
    assert last.bias is None and not out_bn.affine
    assert sum(p.numel() for p in head.parameters()) == 8 * 16 + 2 * 16 + 16 * 4
    x = torch.randn(6, 8)
    h = torch.relu(_batch_norm(x @ first.weight.T, bn))
    z = h @ last.weight.T
    expected = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + out_bn.eps)
    torch.testing.assert_close(head(x), expected, rtol=1e-5, atol=1e-5)
    plain = ProjectionHead(8, 16, 4, output_bias=False)
    assert plain.layers[-1].bias is None and isinstance(plain.layers[-1], nn.Linear)
    assert sum(p.numel() for p in plain.parameters()) == 8 * 16 + 2 * 16 + 16 * 4


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
        (
            lambda: ProjectionHead(8, 16, 4, output_batch_norm="yes"),
            "output_batch_norm must be a bool",
        ),
        (lambda: ProjectionHead(8, 16, 4, output_affine=0), "output_affine must be a bool"),
        (lambda: ProjectionHead(8, 16, 4, output_bias="no"), "output_bias must be a bool"),
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
