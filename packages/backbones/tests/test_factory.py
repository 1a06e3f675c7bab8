"""create_backbone: every family builds and yields (N, num_features); bad names/kwargs fail clearly."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from contrastkit.backbones import (
    BACKBONE_NAMES,
    TABULAR_BACKBONE_NAMES,
    TIMM_PREFIX,
    CifarResNet,
    IMixMLP5,
    MyResNet,
    TabularMLP,
    TimmBackbone,
    check_backbone_name,
    create_backbone,
)

CASES = [
    ("myresnet", {}, MyResNet, (2, 3, 32, 32), 512),
    ("resnet18_cifar", {}, CifarResNet, (2, 3, 32, 32), 512),
    ("resnet34_cifar", {"in_channels": 1}, CifarResNet, (2, 1, 32, 32), 512),
    ("resnet50_cifar", {}, CifarResNet, (2, 3, 32, 32), 2048),
    ("mlp", {"in_features": 54, "width": 32, "num_layers": 5}, TabularMLP, (4, 54), 32),
    ("imix_mlp5", {"in_features": 54, "width_multiplier": 0.125}, IMixMLP5, (4, 54), 256),
    ("timm:resnet18", {"cifar_stem": True}, TimmBackbone, (2, 3, 32, 32), 512),
]


@pytest.mark.parametrize(("name", "kwargs", "cls", "input_shape", "features"), CASES)
def test_every_family_builds_and_returns_features(name, kwargs, cls, input_shape, features):
    model = create_backbone(name, **kwargs).eval()
    assert isinstance(model, cls)
    assert isinstance(model.num_features, int) and model.num_features == features
    with torch.no_grad():
        assert model(torch.randn(input_shape)).shape == (input_shape[0], features)


def test_backbone_names_are_exactly_the_fixed_families() -> None:
    assert BACKBONE_NAMES == (
        "myresnet",
        "resnet18_cifar",
        "resnet34_cifar",
        "resnet50_cifar",
        "mlp",
        "imix_mlp5",
    )
    assert TABULAR_BACKBONE_NAMES == ("mlp", "imix_mlp5")
    assert set(TABULAR_BACKBONE_NAMES) <= set(BACKBONE_NAMES)
    assert TIMM_PREFIX == "timm:"
    for name in BACKBONE_NAMES:
        check_backbone_name(name)
    check_backbone_name("timm:resnet18.a1_in1k")  # pretrained tags are timm names too


def test_unknown_name_lists_valid_names_and_close_matches() -> None:
    with pytest.raises(ValueError) as info:
        create_backbone("myresnt")
    message = str(info.value)
    assert "unknown backbone 'myresnt'" in message
    assert all(repr(n) in message for n in BACKBONE_NAMES) and "timm:<" in message
    assert "did you mean ['myresnet']" in message


def test_bare_timm_name_suggests_the_prefix() -> None:
    with pytest.raises(ValueError, match=r"did you mean .*'resnet18_cifar'.*'timm:resnet18'"):
        create_backbone("resnet18")


@pytest.mark.parametrize("name", [None, 18, ""])
def test_non_string_or_empty_name(name) -> None:
    with pytest.raises(ValueError, match="backbone"):
        create_backbone(name)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("myresnet", {"width": 64}, r"'myresnet' does not take keyword argument\(s\) \['width'\]"),
        ("resnet18_cifar", {"cifar_stem": True}, r"\['cifar_stem'\]; it takes"),
        ("mlp", {"in_features": 54, "in_channels": 3}, r"'mlp' does not take .*\['in_channels'\]"),
        ("timm:resnet18", {"zero_init_residual": True}, r"\['zero_init_residual'\]"),
        ("myresnet", {"in_channels": 0}, "in_channels must be a positive int, got 0"),
        ("timm:resnet18", {"in_channels": -3}, "in_channels must be a positive int, got -3"),
        ("mlp", {"in_features": 54, "width": 0}, "width must be a positive int, got 0"),
        ("imix_mlp5", {"in_features": 54, "in_channels": 1}, r"\['in_channels'\]; it takes"),
        ("timm:resnet18", {"cifar_stem": "yes"}, "cifar_stem must be a bool"),
    ],
)
def test_bad_kwargs_raise_value_error(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_backbone(name, **kwargs)


def test_timm_is_imported_only_for_timm_backbones() -> None:
    # Importing timm takes seconds (it loads torchvision and torch._dynamo): a run on another
    # backbone, and the pipelines' start-up, never pay for it.
    code = (
        "import sys\n"
        "from contrastkit.backbones import create_backbone, check_backbone_name\n"
        "create_backbone('myresnet'); check_backbone_name('mlp')\n"
        "before = 'timm' in sys.modules\n"
        "create_backbone('timm:resnet18')\n"
        "print(before, 'timm' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    ).stdout.split()
    assert out == ["False", "True"]
