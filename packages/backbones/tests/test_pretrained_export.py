"""Weights back into backbones: `create_backbone(..., pretrained_path=...)` with a .safetensors
file, a torch.save file or an export folder (model.safetensors + config.json), for every family;
`load_exported_backbone`; one-line errors naming the keys and shapes that do not fit, or the
damaged file; and the timm facts the export's timm format rests on (the CIFAR ResNets' keys are
timm's, their stem is no timm stem)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from contrastkit.backbones import (
    create_backbone,
    describe_mismatch,
    load_exported_backbone,
    read_state_dict,
    unwrap_state_dict,
)

FAMILIES: list[tuple[str, dict[str, Any], tuple[int, ...]]] = [
    ("myresnet", {}, (3, 3, 8, 8)),
    ("resnet18_cifar", {"in_channels": 1}, (3, 1, 8, 8)),
    ("mlp", {"in_features": 6, "width": 16, "num_layers": 2}, (3, 6)),
    ("imix_mlp5", {"in_features": 54, "width_multiplier": 0.125}, (3, 54)),
    ("timm:test_resnet", {}, (3, 3, 16, 16)),
]


def trained_looking(name: str, kwargs: dict[str, Any], seed: int = 0) -> torch.nn.Module:
    """A seeded backbone whose BatchNorm statistics are not 0 / 1 (so lost buffers would show)."""
    torch.manual_seed(seed)
    backbone = create_backbone(name, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    for layer in backbone.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.running_mean.copy_(0.1 * torch.randn(layer.num_features, generator=generator))
            layer.running_var.copy_(0.5 + torch.rand(layer.num_features, generator=generator))
    return backbone.eval()


def features(backbone: torch.nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    inputs = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return backbone.eval()(inputs)


def write_export(folder: Path, backbone: torch.nn.Module, name: str, kwargs: dict) -> Path:
    """An export folder as contrastkit-export writes it (the fields the loader reads)."""
    folder.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in backbone.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    data = (folder / "model.safetensors").read_bytes()
    config = {
        "contrastkit_export": 1, "format": "safetensors", "weights": "model.safetensors",
        "backbone": {"name": name, "kwargs": kwargs},
        "files": {"model.safetensors": {"bytes": len(data),
                                        "sha256": hashlib.sha256(data).hexdigest()}},
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(("name", "kwargs", "shape"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_round_trip_through_every_kind_of_path(
    tmp_path: Path, name: str, kwargs: dict[str, Any], shape: tuple[int, ...]
) -> None:
    original = trained_looking(name, kwargs)
    expected = features(original, shape)
    save_file({k: v.contiguous() for k, v in original.state_dict().items()},
              str(tmp_path / "w.safetensors"))  # fmt: skip
    torch.save(original.state_dict(), tmp_path / "w.pt")
    folder = write_export(tmp_path / "export", original, name, kwargs)
    for path in (tmp_path / "w.safetensors", tmp_path / "w.pt", folder):
        loaded = create_backbone(name, **kwargs, pretrained_path=path)
        torch.testing.assert_close(features(loaded, shape), expected, atol=1e-6, rtol=0)
    for path in (folder, folder / "model.safetensors"):
        loaded = load_exported_backbone(path)
        torch.testing.assert_close(features(loaded, shape), expected, atol=1e-6, rtol=0)


def test_weights_that_do_not_fit_are_one_line_naming_keys_and_shapes(tmp_path: Path) -> None:
    folder = write_export(tmp_path / "export", trained_looking("myresnet", {}), "myresnet", {})
    with pytest.raises(ValueError) as missing:
        create_backbone("resnet18_cifar", pretrained_path=folder)
    message = str(missing.value)
    assert (
        "does not fit backbone 'resnet18_cifar' with kwargs {}: missing keys ['layer2.1." in message
    )
    assert "unexpected keys []" in message
    assert "; the export holds backbone 'myresnet' with kwargs {}" in message
    with pytest.raises(ValueError) as shapes:
        create_backbone("myresnet", in_channels=1, pretrained_path=folder)
    assert "shape mismatches ['conv1.weight: file (64, 3, 3, 3) vs model (64, 1, 3, 3)']" in str(
        shapes.value
    )
    assert "\n" not in message and "\n" not in str(shapes.value)


def test_damaged_exports_and_files_that_are_no_state_dict(tmp_path: Path) -> None:
    folder = write_export(tmp_path / "export", trained_looking("myresnet", {}), "myresnet", {})
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is damaged: it does not match its SHA-256 in config"):
        create_backbone("myresnet", pretrained_path=folder)
    with pytest.raises(ValueError, match="is damaged: it does not match its SHA-256"):
        load_exported_backbone(weights)  # the file inside the folder is checked as well
    weights.write_bytes(bytes(data[:100]))
    with pytest.raises(ValueError, match=r"is damaged: it is 100 bytes, config.json says \d+"):
        create_backbone("myresnet", pretrained_path=folder)

    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="holds a list, not a state dict"):
        create_backbone("myresnet", pretrained_path=tmp_path / "list.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="could not be read as a state dict"):
        read_state_dict(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="is not an existing file or folder"):
        create_backbone("mlp", in_features=4, pretrained_path=tmp_path / "nothing")
    (tmp_path / "script").mkdir()
    (tmp_path / "script" / "config.json").write_text(json.dumps({"format": "torchscript"}))
    with pytest.raises(ValueError, match=r"has no model.safetensors \(it is a torchscript export"):
        create_backbone("myresnet", pretrained_path=tmp_path / "script")
    (tmp_path / "script" / "config.json").write_text(json.dumps({"format": "torch_export"}))
    with pytest.raises(ValueError, match=r"has no model.safetensors \(it is a torch_export export"):
        create_backbone("myresnet", pretrained_path=tmp_path / "script")


def test_timm_backbones_read_export_folders_and_drop_weight_source_arguments(
    tmp_path: Path,
) -> None:
    original = trained_looking("timm:test_resnet", {})
    # A run that started from timm's weights records pretrained=True; rebuilding the export
    # must not ask timm for them again (with pretrained_path that is an error, not a download).
    folder = write_export(tmp_path / "export", original, "timm:test_resnet", {"pretrained": True})
    loaded = load_exported_backbone(folder)
    shape = (2, 3, 16, 16)
    torch.testing.assert_close(
        features(loaded, shape), features(original, shape), atol=1e-6, rtol=0
    )
    # timm's own keys (without TimmBackbone's "model.") load the same.
    save_file({k: v.contiguous() for k, v in original.model.state_dict().items()},
              str(tmp_path / "timm.safetensors"))  # fmt: skip
    plain = create_backbone("timm:test_resnet", pretrained_path=tmp_path / "timm.safetensors")
    torch.testing.assert_close(features(plain, shape), features(original, shape), atol=1e-6, rtol=0)


# ------------------------------------------------------ what the timm format can and cannot map


def test_cifar_resnet18_has_timm_resnet18_keys_but_not_its_stem_shape() -> None:
    import timm

    with torch.device("meta"):
        timm_resnet18 = timm.create_model("resnet18", num_classes=0)
        ours = create_backbone("resnet18_cifar")
    problems = describe_mismatch(timm_resnet18.state_dict(), ours.state_dict())
    assert problems == (
        "missing keys [], unexpected keys [], shape mismatches "
        "['conv1.weight: file (64, 3, 3, 3) vs model (64, 3, 7, 7)']"
    )


@pytest.mark.parametrize("stem_type", ["", "deep", "deep_tiered"])
@pytest.mark.parametrize("replace_stem_pool", [False, True])
def test_no_timm_resnet_stem_keeps_the_resolution(stem_type: str, replace_stem_pool: bool) -> None:
    # The CIFAR ResNets' stem keeps 32x32 (3x3 stride-1 conv, no pool); every stem timm's ResNet
    # builds (stem_type x replace_stem_pool) makes it 8x8, so no timm name loads them as they are.
    import timm

    timm_model = timm.create_model(
        "resnet18", num_classes=0, stem_type=stem_type, replace_stem_pool=replace_stem_pool
    ).eval()
    ours = create_backbone("resnet18_cifar").eval()
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        theirs = timm_model.maxpool(timm_model.act1(timm_model.bn1(timm_model.conv1(images))))
        mine = ours.relu(ours.bn1(ours.conv1(images)))
    assert tuple(theirs.shape[-2:]) == (8, 8) and tuple(mine.shape[-2:]) == (32, 32)


def test_unwrap_state_dict_drops_a_prefix_only_when_every_key_has_it() -> None:
    weight, bias = torch.ones(2), torch.zeros(2)
    compiled = {"_orig_mod.fc.weight": weight, "_orig_mod.fc.bias": bias}
    assert unwrap_state_dict(compiled) == {"fc.weight": weight, "fc.bias": bias}
    ddp_of_compiled = {"_orig_mod.module.fc.weight": weight}
    assert unwrap_state_dict(ddp_of_compiled) == {"fc.weight": weight}
    mixed = {"module.fc.weight": weight, "fc.bias": bias}
    assert unwrap_state_dict(mixed) == mixed
    assert unwrap_state_dict({}) == {}
