"""What every method gets from the training loop and its base class: the epoch and the labels in
each forward, the after-backward hook (before the optimizer step), forwards grouped by resolution
(multi-crop), the config fields a method fills, and the reason it gives for refusing i-Mix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pretrain_helpers import tiny_tabular_config, toy_tabular
from torch import Tensor, nn

from contrastkit.backbones import create_backbone
from contrastkit.pipelines.config import JointTrainingConfig, MethodConfig, config_from_dict
from contrastkit.pipelines.methods import build_method
from contrastkit.pipelines.methods.simclr import SimCLR
from contrastkit.pipelines.pretrain import run_pretrain


class _Recorder(nn.Module):
    """An encoder stand-in that records the batch shape of every forward; features = the input's
    per-sample mean, projection = features * 2, so outputs identify their inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.calls.append(tuple(x.shape))
        features = x.flatten(1).mean(dim=1, keepdim=True)
        return features, 2 * features


def _simclr(separate_forwards: bool = False) -> SimCLR:
    raw = tiny_tabular_config(
        Path("unused"), method={"name": "simclr", "separate_forwards": separate_forwards}
    )
    backbone = create_backbone("mlp", in_features=6, width=8, num_layers=1)
    method = build_method(config_from_dict(raw), backbone)
    assert isinstance(method, SimCLR)
    return method


def _crops() -> list[Tensor]:
    """Two 8x8 global crops and three 4x4 local crops of 3 samples, each crop its own constant."""
    sizes = [8, 8, 4, 4, 4]
    return [torch.full((3, 3, s, s), float(i)) for i, s in enumerate(sizes)]


def test_encode_runs_one_forward_per_resolution_in_input_order() -> None:
    method, network, crops = _simclr(), _Recorder(), _crops()
    features, projections = method.encode(network, crops)
    assert network.calls == [(6, 3, 8, 8), (9, 3, 4, 4)]  # globals together, locals together
    expected = torch.arange(5.0).repeat_interleave(3).unsqueeze(1)  # crop i's rows hold i
    torch.testing.assert_close(features, expected)
    torch.testing.assert_close(projections, 2 * expected)


def test_encode_with_separate_forwards_runs_one_forward_per_input() -> None:
    method, network, crops = _simclr(separate_forwards=True), _Recorder(), _crops()
    features, _ = method.encode(network, crops)
    assert network.calls == [(3, 3, 8, 8)] * 2 + [(3, 3, 4, 4)] * 3
    torch.testing.assert_close(features, torch.arange(5.0).repeat_interleave(3).unsqueeze(1))


def test_encode_of_one_resolution_is_one_forward_of_the_concatenation() -> None:
    method, network = _simclr(), _Recorder()
    method.encode(network, _crops()[:2])
    assert network.calls == [(6, 3, 8, 8)]


def test_the_loop_passes_epoch_and_labels_and_calls_after_backward_before_each_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int, bool]] = []  # (epoch, labels in batch, labels match the data)
    hooks: list[tuple[int, bool]] = []  # (epoch, every trainable parameter has a gradient)
    data = toy_tabular(64, features=6)
    original = SimCLR.forward

    def forward(self: SimCLR, views: list[Tensor], **kwargs: object) -> object:
        labels = kwargs["labels"]
        assert isinstance(labels, Tensor) and labels.dtype == torch.int64
        in_data = bool(torch.isin(labels, data.labels).all())
        seen.append((int(kwargs["epoch"]), labels.shape[0], in_data))  # type: ignore[call-overload]
        return original(self, views, **kwargs)  # type: ignore[arg-type]

    def after_backward(self: SimCLR, epoch: int) -> None:
        grads = [p.grad is not None for p in self.encoder.parameters() if p.requires_grad]
        hooks.append((epoch, all(grads)))

    monkeypatch.setattr(SimCLR, "forward", forward)
    monkeypatch.setattr(SimCLR, "after_backward", after_backward)
    raw = tiny_tabular_config(
        tmp_path / "run",
        train={"epochs": 2, "batch_size": 16, "grad_accum": 2, "knn_every": 0},
    )
    result = run_pretrain(config_from_dict(raw), train_data=data)
    # 64 rows, batches of 16, 2 micro-batches per step: 4 forwards and 2 steps per epoch.
    assert result.step == 4
    assert seen == [(0, 16, True)] * 4 + [(1, 16, True)] * 4
    # The hook runs once per optimizer step, after the backward (gradients are there).
    assert hooks == [(0, True), (0, True), (1, True), (1, True)]


def test_method_defaults_fill_only_the_fields_left_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SimCLR, "method_defaults", {"num_prototypes": 7, "scale_loss": 0.5})
    filled = MethodConfig(name="simclr")
    assert (filled.num_prototypes, filled.scale_loss) == (7, 0.5)
    given = MethodConfig(name="simclr", num_prototypes=11)
    assert (given.num_prototypes, given.scale_loss) == (11, 0.5)
    assert MethodConfig(name="npair").num_prototypes is None  # other methods are unaffected


def test_imix_refusal_says_the_methods_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = "its loss has no per-sample positive for virtual labels to weight"
    monkeypatch.setattr(SimCLR, "imix_unsupported_reason", reason)
    with pytest.raises(ValueError, match=r"method\.imix='mixup'") as error:
        MethodConfig(name="simclr", imix="mixup")
    assert reason in str(error.value) and "method.imix=none" in str(error.value)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("num_prototypes", 0, ">= 1"),
        ("sinkhorn_iterations", 0, ">= 1"),
        ("center_momentum", 1.0, "in [0, 1)"),
        ("scale_loss", 0.0, "> 0"),
        ("norm_last_layer", "yes", "true or false"),
    ],
)
def test_method_fields_reject_bad_values_naming_them(
    field: str, value: object, allowed: str
) -> None:
    with pytest.raises(ValueError, match=rf"method\.{field}") as error:
        MethodConfig(name="simclr", **{field: value})
    assert allowed in str(error.value)


def test_only_simsiams_predictor_is_outside_the_lr_schedule() -> None:
    from contrastkit.pipelines.joint import JointTask
    from contrastkit.pipelines.pretrain import PretrainTask

    for name, static in (("simsiam", True), ("simclr", False), ("byol", False)):
        raw = tiny_tabular_config(Path("unused"), method={"name": name})
        config = config_from_dict(raw)
        backbone = create_backbone("mlp", in_features=6, width=8, num_layers=1)
        model = PretrainTask().build_model(config, backbone, num_classes=3)
        modules = PretrainTask().static_lr_modules(model)
        assert modules == ([model.method.predictor] if static else [])
        joint_config = config_from_dict({**raw, "joint": {}}, JointTrainingConfig)
        joint_config.model.backbone_kwargs["in_features"] = 6  # what a run fills from the data
        joint_model = JointTask().build_model(joint_config, backbone, num_classes=3)
        assert len(JointTask().static_lr_modules(joint_model)) == int(static)


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("mocov2", "moco"),
        ("barlow", "barlow_twins"),
        ("BarlowTwins", "barlow_twins"),
        ("simsam", "simsiam"),
    ],
)
def test_a_bad_method_name_suggests_the_method_meant(typed: str, meant: str) -> None:
    from contrastkit.pipelines.methods import check_method_name, method_names

    with pytest.raises(ValueError, match=rf"got '{typed}' \(did you mean '{meant}'\?\)"):
        check_method_name(typed)
    check_method_name(meant)  # a good name passes
    assert meant in method_names()
