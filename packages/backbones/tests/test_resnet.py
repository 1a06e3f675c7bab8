"""MyResNet and CIFAR ResNets: published parameter counts, equality with torchvision, shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from contrastkit.backbones import CifarResNet, LinearClassifier, MyResNet, create_backbone


def _n_params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)


def _torchvision_cifar(block: type, layers: list[int], num_classes: int | None = 10) -> ResNet:
    """Independent reference: torchvision's ResNet with the stem swapped as the spec says."""
    model = ResNet(block, layers, num_classes=num_classes or 1000)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    if num_classes is None:
        model.fc = nn.Identity()
    return model


# (name, torchvision block, layers, published count with a 10-class head, features)
CIFAR_FORMS = [
    ("myresnet", BasicBlock, [2, 1, 1, 1], 4_977_226, 512),
    ("resnet18_cifar", BasicBlock, [2, 2, 2, 2], 11_173_962, 512),
    ("resnet34_cifar", BasicBlock, [3, 4, 6, 3], 21_282_122, 512),
    ("resnet50_cifar", Bottleneck, [3, 4, 6, 3], 23_520_842, 2048),
]


@pytest.mark.parametrize(("name", "block", "layers", "published", "features"), CIFAR_FORMS)
def test_parameter_count_with_10_class_head(name, block, layers, published, features) -> None:
    backbone = create_backbone(name)
    head = LinearClassifier(backbone.num_features, 10)
    assert backbone.num_features == features
    assert _n_params(backbone, head) == published
    assert _n_params(_torchvision_cifar(block, layers)) == published


def test_myresnet_is_under_5m_and_matches_seed_figure() -> None:
    model = MyResNet()
    assert _n_params(model) + 512 * 10 + 10 == 4_977_226 < 5_000_000


@pytest.mark.parametrize(("name", "block", "layers", "published", "features"), CIFAR_FORMS)
def test_same_function_as_torchvision_with_cifar_stem(
    name, block, layers, published, features
) -> None:
    torch.manual_seed(0)
    reference = _torchvision_cifar(block, layers, num_classes=None).eval()
    with torch.no_grad():  # non-trivial BN statistics so a misplaced BN would show
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    ours = create_backbone(name).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-5)


def test_myresnet_layout_is_the_spec() -> None:
    model = MyResNet()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.conv1.out_channels == 64
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    assert [len(s) for s in stages] == [2, 1, 1, 1]
    assert [s[0].conv1.stride for s in stages] == [(1, 1), (2, 2), (2, 2), (2, 2)]
    assert [s[-1].conv2.out_channels for s in stages] == [64, 128, 256, 512]
    # projection shortcut exactly where the shape changes: 1x1 conv + BN
    assert model.layer1[0].downsample is None and model.layer1[1].downsample is None
    for stage in stages[1:]:
        conv, bn = stage[0].downsample
        assert conv.kernel_size == (1, 1) and isinstance(bn, nn.BatchNorm2d)


@pytest.mark.parametrize("name", ["myresnet", "resnet18_cifar", "resnet34_cifar", "resnet50_cifar"])
@pytest.mark.parametrize("size", [32, 64])
def test_output_shape(name: str, size: int) -> None:
    model = create_backbone(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, model.num_features)
    assert out.dtype == torch.float32


def test_grayscale_input_channels() -> None:
    model = MyResNet(in_channels=1).eval()
    assert model.conv1.in_channels == 1
    assert _n_params(model) == _n_params(MyResNet()) - 64 * 2 * 9
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 512)


def test_wrong_input_shape_gives_clear_error() -> None:
    model = MyResNet()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*\(2, 1, 32, 32\)"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(3, 32, 32\)"):
        model(torch.randn(3, 32, 32))


def test_channels_last_gives_same_features() -> None:
    torch.manual_seed(0)
    model = create_backbone("resnet18_cifar").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_zero_init_residual_makes_blocks_start_as_identity() -> None:
    model = CifarResNet((1, 1, 1, 1), "bottleneck", zero_init_residual=True)
    blocks = [model.layer1[0], model.layer2[0], model.layer3[0], model.layer4[0]]
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for b in blocks)
    assert torch.count_nonzero(MyResNet().layer1[0].bn2.weight) == 64


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layers": (2, 2, 2)}, "layers must be a sequence of 4"),
        ({"layers": (2, 0, 2, 2)}, r"layers\[1\]"),
        ({"block": "wide"}, "block must be one of"),
        ({"in_channels": 0}, "in_channels must be a positive int, got 0"),
        ({"zero_init_residual": "yes"}, "zero_init_residual must be a bool"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CifarResNet(**kwargs)
