"""TabularMLP: layout, parameter count by formula, shapes, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastkit.backbones import TabularMLP, create_backbone


def test_default_is_five_linear_bn_relu_blocks_of_2048() -> None:
    mlp = create_backbone("mlp", in_features=54)
    assert mlp.num_features == 2048
    kinds = [type(m) for m in mlp.layers]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 5
    expected = 54 * 2048 + 4 * 2048 * 2048 + 5 * 2 * 2048
    assert sum(p.numel() for p in mlp.parameters()) == expected


@pytest.mark.parametrize(("width", "num_layers"), [(64, 1), (32, 3)])
def test_features_shape_and_value(width: int, num_layers: int) -> None:
    torch.manual_seed(0)
    mlp = TabularMLP(10, width=width, num_layers=num_layers).eval()
    x = torch.randn(7, 10)
    h = x
    for linear, bn in zip(mlp.layers[0::3], mlp.layers[1::3]):  # eval-mode BN by hand
        h = h @ linear.weight.T
        h = (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        h = torch.relu(h)
    with torch.no_grad():
        out = mlp(x)
    assert out.shape == (7, width)
    torch.testing.assert_close(out, h.detach())


def test_bad_arguments_and_inputs() -> None:
    with pytest.raises(ValueError, match="needs in_features"):
        create_backbone("mlp")
    with pytest.raises(ValueError, match="in_features must be a positive int, got 0"):
        create_backbone("mlp", in_features=0)
    with pytest.raises(ValueError, match="width must be a positive int, got -8"):
        create_backbone("mlp", in_features=54, width=-8)
    with pytest.raises(ValueError, match="num_layers must be a positive int, got 0"):
        create_backbone("mlp", in_features=54, num_layers=0)
    mlp = TabularMLP(54, width=16)
    with pytest.raises(ValueError, match=r"\(N, 54\), got \(4, 53\)"):
        mlp(torch.randn(4, 53))
