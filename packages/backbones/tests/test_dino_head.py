"""DINOHead and WeightNormLinear: layout and parameter counts by formula, the forward against a
by-hand computation and against torch's own weight norm, fixed vs trainable norms, errors."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.backbones.dino_head import DINOHead, WeightNormLinear


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_parameter_count_and_layout(num_layers: int, batch_norm: bool) -> None:
    d_in, h, d, k = 12, 20, 8, 30
    head = DINOHead(
        d_in, k, hidden_dim=h, bottleneck_dim=d, num_layers=num_layers, batch_norm=batch_norm
    )
    if num_layers == 1:
        expected = d_in * d + d + k * d + k
    else:
        expected = (
            d_in * h + h + (num_layers - 2) * (h * h + h) + h * d + d
            + (num_layers - 1) * (2 * h if batch_norm else 0)
            + k * d + k
        )  # fmt: skip
    assert _n_params(head) == expected
    kinds = [type(m) for m in head.mlp]
    block = [nn.Linear, nn.BatchNorm1d, nn.GELU] if batch_norm else [nn.Linear, nn.GELU]
    assert kinds == block * (num_layers - 1) + [nn.Linear]
    assert head(torch.randn(5, d_in)).shape == (5, k)


def test_the_original_sizes() -> None:
    # facebookresearch/dino and solo-learn defaults on a ResNet-18's 512 features, 4096 prototypes
    # (solo-learn's CIFAR recipe): 512*2048+2048 + 2048*2048+2048 + 2048*256+256 + 4096*256+4096.
    head = DINOHead(512, 4096)
    assert _n_params(head) == 1_050_624 + 4_196_352 + 524_544 + 1_052_672
    assert not any(isinstance(m, nn.BatchNorm1d) for m in head.modules())


def test_forward_is_mlp_then_normalised_bottleneck_then_unit_prototypes() -> None:
    torch.manual_seed(0)
    head = DINOHead(6, 10, hidden_dim=16, bottleneck_dim=4, num_layers=3)
    with torch.no_grad():  # a norm other than 1 must not matter while the norm is fixed
        head.last_layer.weight_v.mul_(3.0)
    x = torch.randn(7, 6)
    first, _, second, _, third = head.mlp
    h = F.gelu(x @ first.weight.T + first.bias)
    h = F.gelu(h @ second.weight.T + second.bias)
    z = h @ third.weight.T + third.bias
    z = z / z.norm(dim=1, keepdim=True)
    v = head.last_layer.weight_v
    expected = z @ (v / v.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(head(x), expected)
    # Logits are cosines of a unit bottleneck with unit prototypes.
    assert head(x).abs().max() <= 1.0 + 1e-6


def test_last_layer_equals_torch_weight_norm() -> None:
    torch.manual_seed(1)
    ours = WeightNormLinear(5, 9, fixed_norm=False)
    with torch.no_grad():
        ours.weight_g.copy_(torch.rand(9, 1) + 0.5)
    reference = nn.Linear(5, 9, bias=False)
    reference.weight.data.copy_(ours.weight_v.detach())
    reference = nn.utils.parametrizations.weight_norm(reference)  # g = ||v|| at start
    reference.parametrizations.weight.original0.data.copy_(ours.weight_g.detach())
    x = torch.randn(4, 5)
    torch.testing.assert_close(ours(x), reference(x))
    ours(x).square().sum().backward()
    reference(x).square().sum().backward()
    original = reference.parametrizations.weight
    torch.testing.assert_close(ours.weight_g.grad, original.original0.grad)
    torch.testing.assert_close(ours.weight_v.grad, original.original1.grad)


def test_state_dict_names_are_those_of_nn_utils_weight_norm() -> None:
    # The deprecated nn.utils.weight_norm, as facebookresearch/dino and solo-learn build the
    # last layer: its state_dict loads into ours and gives the same outputs.
    torch.manual_seed(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        original = nn.utils.weight_norm(nn.Linear(4, 6, bias=False))
    original.weight_g.data.fill_(1)
    ours = WeightNormLinear(4, 6)
    ours.load_state_dict(original.state_dict())
    x = torch.randn(3, 4)
    torch.testing.assert_close(ours(x), original(x))


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_norm_last_layer_fixes_the_norms(norm_last_layer: bool) -> None:
    torch.manual_seed(3)
    head = DINOHead(6, 10, hidden_dim=16, bottleneck_dim=4, norm_last_layer=norm_last_layer)
    g, v = head.last_layer.weight_g, head.last_layer.weight_v
    torch.testing.assert_close(g.detach(), torch.ones(10, 1))
    assert g.requires_grad is (not norm_last_layer)
    head(torch.randn(8, 6)).logsumexp(dim=1).sum().backward()
    assert (g.grad is None) is norm_last_layer
    # Through a row normalisation, each row's gradient is orthogonal to that row.
    torch.testing.assert_close((v.grad * v.detach()).sum(dim=1), torch.zeros(10), atol=1e-6, rtol=0)
    if norm_last_layer:
        rows = head.last_layer.weight.detach().norm(dim=1)
        torch.testing.assert_close(rows, torch.ones(10))


def test_mlp_starts_from_a_truncated_normal_with_zero_bias() -> None:
    torch.manual_seed(4)
    head = DINOHead(256, 8, hidden_dim=512, bottleneck_dim=64)
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    weights = torch.cat([m.weight.flatten() for m in linears])
    assert abs(weights.std().item() - 0.02) < 0.001 and weights.abs().max() <= 2.0
    assert all(torch.equal(m.bias, torch.zeros_like(m.bias)) for m in linears)


def test_batch_norm_standardises_the_hidden_layer() -> None:
    torch.manual_seed(5)
    head = DINOHead(6, 10, hidden_dim=16, bottleneck_dim=4, num_layers=2, batch_norm=True).train()
    x = torch.randn(9, 6)
    first, bn, _, last = head.mlp
    h = x @ first.weight.T + first.bias
    h = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bn.eps) * bn.weight + bn.bias
    z = F.normalize(F.gelu(h) @ last.weight.T + last.bias, dim=1)
    torch.testing.assert_close(head(x), z @ head.last_layer.weight.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_dim": 0}, "in_dim must be a positive int, got 0"),
        ({"num_prototypes": -1}, "num_prototypes must be a positive int, got -1"),
        ({"hidden_dim": 2.0}, "hidden_dim must be a positive int, got 2.0"),
        ({"bottleneck_dim": True}, "bottleneck_dim must be a positive int, got True"),
        ({"num_layers": 0}, "num_layers must be a positive int, got 0"),
        ({"batch_norm": "false"}, "batch_norm must be a bool, got 'false'"),
        ({"norm_last_layer": 1}, "norm_last_layer must be a bool, got 1"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    arguments = {"in_dim": 6, "num_prototypes": 10, **kwargs}
    in_dim, num_prototypes = arguments.pop("in_dim"), arguments.pop("num_prototypes")
    with pytest.raises(ValueError, match=message):
        DINOHead(in_dim, num_prototypes, **arguments)


def test_bad_input_shape_raises() -> None:
    with pytest.raises(ValueError, match=r"DINOHead expects input of shape \(N, 6\), got \(3, 5\)"):
        DINOHead(6, 10, hidden_dim=8, bottleneck_dim=4)(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"WeightNormLinear expects input of shape \(N, 4\)"):
        WeightNormLinear(4, 3)(torch.randn(2, 4, 1))
    with pytest.raises(ValueError, match="fixed_norm must be a bool, got None"):
        WeightNormLinear(4, 3, fixed_norm=None)  # type: ignore[arg-type]
