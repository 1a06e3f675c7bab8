"""IMixMLP5 (i-Mix's mlp_5layer): parameter counts, maxout, column groups, errors, a training step."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from contrastkit.backbones import TABULAR_BACKBONE_NAMES, IMixMLP5, create_backbone
from contrastkit.backbones.imix_mlp import Maxout

PUBLISHED_COVTYPE_PARAMS = 63_356_480  # kibok90/imix models/mlp.py, encoder without its fc


def _hand_count(groups: tuple[int, ...] | None, in_features: int, w: int) -> int:
    """Parameters of mlp_5layer(width=w), written out layer by layer from the original."""
    if groups:  # one plain Linear(g, 64) per group
        count = sum(g * 64 + 64 for g in groups)
        h0 = 64 * len(groups)
    else:  # one Linear(in_features, 64) + BN(64)
        count = in_features * 64 + 64 + 2 * 64
        h0 = 64
    hidden = [h0, 32 * w, 32 * w, 64 * w, 64 * w]
    for a, b in itertools.pairwise(hidden):
        count += a * b + b + 2 * b  # Linear with bias, BN gamma and beta
    return count + 64 * w * 128 * w + 128 * w  # last Linear, no BN


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_width_1_covtype_has_the_published_parameter_count_and_layer_shapes() -> None:
    with torch.device("meta"):  # counts and shapes only: no 250 MB of weights
        model = create_backbone("imix_mlp5", in_features=54)
    assert _hand_count((10, 4, 40), 54, 64) == PUBLISHED_COVTYPE_PARAMS
    assert _num_params(model) == PUBLISHED_COVTYPE_PARAMS
    assert model.num_features == 2048 and model.width == 64
    linears = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [
        (10, 64),
        (4, 64),
        (40, 64),
        (192, 2048),
        (2048, 2048),
        (2048, 4096),
        (4096, 4096),
        (4096, 8192),
    ]
    assert [m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm1d)] == [
        2048,
        2048,
        4096,
        4096,
    ]


@pytest.mark.parametrize(
    ("multiplier", "w", "features"),
    [(0.5, 32, 1024), (0.25, 16, 512), (0.125, 8, 256), (1 / 64, 1, 32), (2, 128, 4096)],
)
def test_smaller_and_larger_multipliers_match_the_formula(multiplier, w, features) -> None:
    with torch.device("meta"):
        model = IMixMLP5(54, (10, 4, 40), width_multiplier=multiplier)
    assert model.num_features == features
    assert _num_params(model) == _hand_count((10, 4, 40), 54, w)


def test_multiplier_keeps_the_input_layers_64_wide() -> None:
    model = IMixMLP5(54, width_multiplier=0.125)
    assert [layer.out_features for layer in model.input_layers] == [64, 64, 64]
    assert _num_params(model) == 1_041_472  # the research note's figure for width 8


def test_ungrouped_input_is_linear_bn_relu_as_for_higgs() -> None:
    model = IMixMLP5(28, input_groups=None, width_multiplier=0.25)
    kinds = [type(m) for m in model.input_layers[0]]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    assert _num_params(model) == _hand_count(None, 28, 16)
    assert model(torch.randn(5, 28)).shape == (5, 512)


def test_maxout_takes_consecutive_units() -> None:
    x = torch.arange(8.0).flip(0).view(1, 8)  # [7, 6, 5, 4, 3, 2, 1, 0]
    # consecutive groups {7,6,5,4}, {3,2,1,0}; strided groups would give [7, 6]
    assert Maxout(4)(x).tolist() == [[7.0, 3.0]]
    with pytest.raises(ValueError, match=r"multiple of 4, got \(1, 6\)"):
        Maxout(4)(torch.zeros(1, 6))


def test_width_1_maxout_maps_8192_pre_activations_to_2048_features() -> None:
    torch.manual_seed(0)
    model = IMixMLP5(54).eval()
    captured: list[torch.Tensor] = []
    model.last_linear.register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        out = model(torch.randn(3, 54))
    (pre,) = captured
    assert pre.shape == (3, 8192) and out.shape == (3, 2048)
    expected = torch.stack([pre[:, k::4] for k in range(4)]).amax(dim=0)  # unit 4j + k
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for j in (0, 1, 777, 2047):
        assert torch.equal(out[:, j], pre[:, 4 * j : 4 * j + 4].max(dim=1).values)


def test_each_group_feeds_only_its_own_input_layer() -> None:
    torch.manual_seed(0)
    model = IMixMLP5(54, width_multiplier=0.125).eval()
    seen: dict[int, torch.Tensor] = {}
    for i, layer in enumerate(model.input_layers):
        layer.register_forward_hook(lambda _m, _i, out, i=i: seen.__setitem__(i, out.clone()))
    body_input: list[torch.Tensor] = []
    model.body.register_forward_pre_hook(lambda _m, args: body_input.append(args[0].clone()))
    x = torch.randn(6, 54)
    changed = x.clone()
    changed[:, 10:14] = torch.randn(6, 4)  # group 2: the 4 wilderness-area columns
    with torch.no_grad():
        model(x)
        before = dict(seen)
        model(changed)
    assert torch.equal(seen[0], before[0]) and torch.equal(seen[2], before[2])
    assert not torch.allclose(seen[1], before[1])
    second = model.input_layers[1]
    torch.testing.assert_close(seen[1], changed[:, 10:14] @ second.weight.T + second.bias)
    by_hand = [x[:, :10], x[:, 10:14], x[:, 14:]]
    with torch.no_grad():
        concatenated = torch.cat([lin(c) for lin, c in zip(model.input_layers, by_hand)], 1)
    torch.testing.assert_close(body_input[0], concatenated)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"in_features": 54, "input_groups": (10, 4, 39)},
            r"\[10, 4, 39\] sum to 53 .*in_features is 54",
        ),
        ({"in_features": 28}, r"\[10, 4, 40\] sum to 54 columns but in_features is 28"),
        ({"in_features": 54, "input_groups": []}, "at least one column group"),
        (
            {"in_features": 54, "input_groups": (10, 0, 44)},
            "input_groups entry must be a positive int, got 0",
        ),
        ({"in_features": 54, "input_groups": (10.0, 4, 40)}, "positive int, got 10.0"),
        ({"in_features": 54, "input_groups": "10,4,40"}, "list of ints or None"),
        ({"in_features": 54, "width_multiplier": 0}, "finite number > 0, got 0"),
        ({"in_features": 54, "width_multiplier": -0.5}, "finite number > 0, got -0.5"),
        ({"in_features": 54, "width_multiplier": math.nan}, "finite number > 0"),
        ({"in_features": 54, "width_multiplier": True}, "finite number > 0, got True"),
        ({"in_features": 54, "width_multiplier": "1"}, "finite number > 0, got '1'"),
        ({"in_features": 54, "width_multiplier": 0.3}, r"whole number .*got 0.3 -> w = 19.2"),
        ({"in_features": 54, "width_multiplier": 0.005}, r"got 0.005 -> w = 0.32"),
        ({}, "backbone 'imix_mlp5' needs in_features"),
        ({"in_features": 54, "width": 2048}, r"does not take keyword argument\(s\) \['width'\]"),
    ],
)
def test_bad_arguments_raise_clear_value_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_backbone("imix_mlp5", **kwargs)


def test_bad_inputs_raise_value_errors() -> None:
    model = IMixMLP5(54, width_multiplier=1 / 64)
    with pytest.raises(ValueError, match=r"\(N, 54\), got \(4, 53\)"):
        model(torch.randn(4, 53))
    with pytest.raises(ValueError, match=r"float rows, got dtype torch\.int64"):
        model(torch.ones(4, 54, dtype=torch.long))


def test_one_training_step_gives_finite_gradients_everywhere() -> None:
    torch.manual_seed(0)
    model = create_backbone("imix_mlp5", in_features=54, width_multiplier=0.125)
    head = nn.Linear(model.num_features, 7)
    optimizer = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    rows, labels = torch.randn(16, 54), torch.randint(0, 7, (16,))
    loss = nn.functional.cross_entropy(head(model(rows)), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # A bias whose output reaches a train-mode BatchNorm through Linears only is a constant
    # shift the BN subtracts again: its gradient is 0 up to rounding (the original keeps them).
    shifted_by_bn = {f"input_layers.{i}.bias" for i in range(3)}
    shifted_by_bn |= {f"body.{i}.0.bias" for i in range(4)}
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name in shifted_by_bn:
            assert p.grad.abs().max() < 1e-6, name
        else:
            assert p.grad.abs().max() > 1e-4, f"{name} got no gradient"
    optimizer.step()
    for (name, p), old in zip(model.named_parameters(), before):
        if name not in shifted_by_bn:
            assert not torch.equal(p, old), f"{name} did not move"
    with torch.no_grad():
        assert nn.functional.cross_entropy(head(model(rows)), labels) < loss


def test_factory_builds_it_from_config_values() -> None:
    assert "imix_mlp5" in TABULAR_BACKBONE_NAMES
    model = create_backbone(
        "imix_mlp5", in_features=54, input_groups=[10, 4, 40], width_multiplier=0.25
    )
    assert isinstance(model, IMixMLP5) and model.input_groups == (10, 4, 40)
    assert model.eval()(torch.randn(2, 54)).shape == (2, model.num_features) == (2, 512)
