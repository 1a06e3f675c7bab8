"""extract_features against a manual eval-mode forward; train/eval flags restored; bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastkit.pipelines.evaluation.features import extract_features


def _image_backbone() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


def _to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 255 - 0.5


@pytest.mark.parametrize("batch_size", [1, 7, 512])
def test_image_features_equal_a_manual_eval_forward(batch_size):
    backbone = _image_backbone()
    backbone(torch.randn(16, 3, 8, 8))  # move BN running stats away from their init
    images = torch.randint(0, 256, (23, 3, 8, 8), dtype=torch.uint8)
    features = extract_features(backbone, images, transform=_to_float, batch_size=batch_size)

    backbone.eval()
    with torch.no_grad():
        expected = backbone(_to_float(images))
    assert features.shape == (23, 5) and features.dtype == torch.float32
    torch.testing.assert_close(features, expected)


def test_tabular_features_and_float32_output_of_a_double_model():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    backbone = backbone.double()
    rows = torch.randn(10, 4, dtype=torch.float64)
    features = extract_features(backbone, rows, batch_size=3)
    backbone.eval()
    with torch.no_grad():
        expected = backbone(rows).float()
    assert features.dtype == torch.float32
    torch.testing.assert_close(features, expected)


def test_train_and_eval_flags_of_every_submodule_are_restored():
    backbone = _image_backbone()
    backbone.train()
    backbone[1].eval()  # a frozen BatchNorm must stay frozen
    before = [m.training for m in backbone.modules()]
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    extract_features(backbone, images, transform=_to_float)
    assert [m.training for m in backbone.modules()] == before
    assert before[0] is True and before[2] is False


def test_flags_are_restored_when_the_forward_fails_and_no_gradients_are_kept():
    backbone = _image_backbone().train()

    def broken(batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("transform failed")

    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="transform failed"):
        extract_features(backbone, images, transform=broken)
    assert all(m.training for m in backbone.modules())
    features = extract_features(backbone, images, transform=_to_float)
    assert not features.requires_grad


def test_a_one_view_list_from_the_transform_is_accepted_and_two_views_are_refused():
    backbone = _image_backbone()
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    single = extract_features(backbone, images, transform=lambda x: [_to_float(x)])
    torch.testing.assert_close(single, extract_features(backbone, images, transform=_to_float))
    with pytest.raises(ValueError, match="transform must return one tensor"):
        extract_features(backbone, images, transform=lambda x: [_to_float(x), _to_float(x)])


def test_progress_bar_does_not_change_the_result():
    backbone = _image_backbone()
    images = torch.randint(0, 256, (9, 3, 8, 8), dtype=torch.uint8)
    quiet = extract_features(backbone, images, transform=_to_float, batch_size=4)
    shown = extract_features(backbone, images, transform=_to_float, batch_size=4, progress=True)
    torch.testing.assert_close(quiet, shown)


@pytest.mark.parametrize(
    ("inputs", "kwargs", "message"),
    [
        (torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8), {}, "need a transform"),
        (torch.randn(4, 3, 8), {"transform": _to_float}, r"\(N, C, H, W\) images or \(N, F\)"),
        (torch.randn(0, 3, 8, 8), {"transform": _to_float}, "empty"),
        (torch.randn(4, 3, 8, 8), {"batch_size": 0}, "batch_size must be a positive int"),
        (torch.randn(4, 3, 8, 8), {"transform": "identity"}, "transform must be callable"),
    ],
)
def test_bad_inputs_raise_value_errors(inputs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        extract_features(_image_backbone(), inputs, **kwargs)


def test_a_backbone_returning_feature_maps_is_refused():
    backbone = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"backbone must return \(B, D\) features"):
        extract_features(backbone, torch.randn(2, 3, 8, 8))
