"""TimmBackbone: same features as timm's own forward, CIFAR stem, local weights, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from contrastkit.backbones import TimmBackbone, create_backbone


def test_features_equal_timm_forward_features_plus_global_average_pool() -> None:
    torch.manual_seed(0)
    backbone = create_backbone("timm:resnet18").eval()
    reference = timm.create_model("resnet18", num_classes=0).eval()
    reference.load_state_dict(backbone.model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference.forward_features(x).mean(dim=(2, 3))
        got = backbone(x)
    assert backbone.num_features == 512 == got.shape[1]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_classifier_is_removed() -> None:
    backbone = create_backbone("timm:resnet18")
    assert isinstance(backbone.model.fc, nn.Identity)
    assert backbone.model.num_classes == 0


def test_cifar_stem_swaps_conv1_and_drops_maxpool() -> None:
    plain = create_backbone("timm:resnet18").eval()
    cifar = create_backbone("timm:resnet18", cifar_stem=True).eval()
    assert plain.model.conv1.kernel_size == (7, 7) and plain.model.conv1.stride == (2, 2)
    conv = cifar.model.conv1
    assert (conv.kernel_size, conv.stride, conv.padding) == ((3, 3), (1, 1), (1, 1))
    assert (conv.in_channels, conv.out_channels, conv.bias) == (3, 64, None)
    assert isinstance(cifar.model.maxpool, nn.Identity)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        # total stride 32 -> 8: a 32x32 image keeps a 4x4 map instead of 1x1
        assert plain.model.forward_features(x).shape[-2:] == (1, 1)
        assert cifar.model.forward_features(x).shape[-2:] == (4, 4)
        assert cifar(x).shape == (2, 512)
    n_plain = sum(p.numel() for p in plain.parameters())
    n_cifar = sum(p.numel() for p in cifar.parameters())
    assert n_plain - n_cifar == 64 * 3 * (49 - 9)


def test_cifar_stem_with_grayscale_input() -> None:
    backbone = create_backbone("timm:resnet18", cifar_stem=True, in_channels=1).eval()
    assert backbone.model.conv1.in_channels == 1
    with torch.no_grad():
        assert backbone(torch.randn(2, 1, 32, 32)).shape == (2, 512)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        backbone(torch.randn(2, 3, 32, 32))


def test_cifar_stem_on_a_non_resnet_names_the_model() -> None:
    with pytest.raises(ValueError, match=r"cifar_stem.*'mobilenetv3_small_050'"):
        create_backbone("timm:mobilenetv3_small_050", cifar_stem=True)
    # a deep-stem ResNet has a Sequential conv1: the 3x3 swap is not defined for it
    with pytest.raises(ValueError, match=r"cifar_stem.*'resnet18d'"):
        create_backbone("timm:resnet18d", cifar_stem=True)


def test_pretrained_path_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_backbone("timm:resnet18", cifar_stem=True).eval()
    path = tmp_path / "resnet18_cifar.pth"
    torch.save(source.model.state_dict(), path)
    torch.manual_seed(1)
    loaded = create_backbone("timm:resnet18", cifar_stem=True, pretrained_path=path).eval()
    fresh = create_backbone("timm:resnet18", cifar_stem=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))
        assert not torch.allclose(fresh(x), source(x))


def test_pretrained_path_accepts_timmbackbone_state_dict(tmp_path: Path) -> None:
    source = create_backbone("timm:resnet18")
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)  # keys carry the "model." prefix
    loaded = create_backbone("timm:resnet18", pretrained_path=str(path))
    for (k, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k


def test_imagenet_shaped_file_loads_everything_but_stem_and_classifier(tmp_path: Path) -> None:
    imagenet = timm.create_model("resnet18", num_classes=1000)  # 7x7 stem and an fc layer
    path = tmp_path / "resnet18_in1k.pth"
    torch.save(imagenet.state_dict(), path)
    loaded = create_backbone("timm:resnet18", cifar_stem=True, pretrained_path=path)
    source = imagenet.state_dict()
    for key, value in loaded.model.state_dict().items():
        if key == "conv1.weight":
            assert value.shape == (64, 3, 3, 3)
        else:
            assert torch.equal(value, source[key]), key
    # without the stem swap the 7x7 conv1 loads too; fc is ignored either way
    plain = create_backbone("timm:resnet18", pretrained_path=path)
    assert torch.equal(plain.model.conv1.weight, source["conv1.weight"])


def test_mismatched_file_raises_value_error(tmp_path: Path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34", num_classes=0).state_dict(), path)
    with pytest.raises(ValueError, match=r"does not fit timm model 'resnet18'.*unexpected"):
        create_backbone("timm:resnet18", pretrained_path=path)
    path50 = tmp_path / "resnet50.pth"
    torch.save(timm.create_model("resnet50", num_classes=0).state_dict(), path50)
    with pytest.raises(ValueError, match="shape mismatches"):
        create_backbone("timm:resnet101", pretrained_path=path50)


def test_pretrained_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an existing file"):
        create_backbone("timm:resnet18", pretrained_path=tmp_path / "missing.pth")
    path = tmp_path / "w.pth"
    torch.save({}, path)
    with pytest.raises(ValueError, match="either pretrained=True"):
        create_backbone("timm:resnet18", pretrained=True, pretrained_path=path)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="could not be read as a state_dict"):
        create_backbone("timm:resnet18", pretrained_path=text)
    odd = tmp_path / "odd.pth"
    torch.save({"conv1.weight": [1, 2, 3]}, odd)
    with pytest.raises(ValueError, match="holds a dict, not a state_dict"):
        create_backbone("timm:resnet18", pretrained_path=odd)


def test_model_kwargs_are_forwarded_and_reserved_ones_refused() -> None:
    backbone = create_backbone("timm:resnet18", model_kwargs={"drop_path_rate": 0.1})
    assert backbone.model.layer4[1].drop_path.drop_prob == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"must not contain \['num_classes'\]"):
        create_backbone("timm:resnet18", model_kwargs={"num_classes": 10})
    with pytest.raises(ValueError, match="rejected model_kwargs"):
        create_backbone("timm:resnet18", model_kwargs={"no_such_option": 1})


def test_unknown_timm_name_suggests_close_matches() -> None:
    with pytest.raises(ValueError, match=r"unknown timm model 'resnet81'.*timm:resnet18'"):
        create_backbone("timm:resnet81")
    with pytest.raises(ValueError, match=r"unknown timm model 'resnt50'.*resnet50"):
        TimmBackbone("resnt50")


def test_non_resnet_timm_model_gives_features() -> None:
    backbone = create_backbone("timm:mobilenetv3_small_050").eval()
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 64, 64))
    # MobileNetV3's pre-logits conv_head widens 288 channels to 1024 features
    assert backbone.model.num_features == 288
    assert out.shape == (2, backbone.num_features) == (2, 1024)
