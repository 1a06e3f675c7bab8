"""MoCo v3, NNCLR and SupCon as pretrain methods: each loss against a computation written out here,
their heads and momentum schedule, i-Mix (or SupCon's refusal), state that resumes exactly,
learning on a toy, a tiny timm ViT, runs from the shipped smoke config, and SupCon in joint
training."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pretrain_helpers import (
    CONFIG_DIR,
    TOY_CLASSES,
    tabular_method,
    tiny_image_config,
    tiny_tabular_config,
    toy_tabular,
)
from torch import nn

from contrastkit.backbones import LinearClassifier, create_backbone
from contrastkit.objectives import imix_mixup
from contrastkit.pipelines.config import JointTrainingConfig, config_from_dict, load_config
from contrastkit.pipelines.joint import run_joint
from contrastkit.pipelines.joint_model import JointModel
from contrastkit.pipelines.methods import build_method
from contrastkit.pipelines.metrics import read_metrics
from contrastkit.pipelines.pretrain import run_pretrain

FEATURES = 6
N = 12


_method = tabular_method


def _views(count: int = 2, seed: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(N, FEATURES, generator=generator)
    return [x + 0.1 * torch.randn(N, FEATURES, generator=generator) for _ in range(count)]


def _mixed(views: list[torch.Tensor], imix: str, seed: int = 5) -> list[tuple]:
    """(input, targets) per view as the method draws them: view 1 first, one generator."""
    if imix == "none":
        return [(v, None) for v in views]
    generator = torch.Generator().manual_seed(seed)
    return [imix_mixup(v, 1.0, generator) for v in views]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _soft_ce(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """Cross entropy of each row against soft targets (None: row i's target is column i)."""
    if targets is None:
        targets = torch.eye(logits.shape[0])
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _layers(module: nn.Module) -> list[tuple]:
    """(kind, in, out, has bias / affine) of every layer, for comparing head structures."""
    found = []
    for m in module.modules():
        if isinstance(m, nn.Linear):
            found.append(("Linear", m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.BatchNorm1d):
            found.append(("BN", m.num_features, m.num_features, m.affine))
        elif isinstance(m, nn.ReLU):
            found.append(("ReLU",))
    return found


def _decreased(losses: list[float], skip: int, window: int) -> bool:
    early = losses[skip : skip + window]
    return sum(losses[-window:]) / window < sum(early) / window


# ------------------------------------------------------------------------------------- MoCo v3


@pytest.mark.parametrize("imix", ["none", "mixup"])
def test_mocov3_is_the_symmetric_2t_contrast_of_predictions_and_momentum_keys(imix: str) -> None:
    method = _method("mocov3", imix).eval()  # eval: one forward of 2N = two forwards of N
    v1, v2 = _views()
    out = method([v1, v2], step=0, generator=torch.Generator().manual_seed(5))
    (x1, t1), (x2, t2) = _mixed([v1, v2], imix)

    def query(x: torch.Tensor) -> torch.Tensor:
        return _unit(method.predictor(method.encoder(x)[1]))

    k1, k2 = _unit(method.teacher(v1)[1]), _unit(method.teacher(v2)[1])
    t = 0.2
    expected = 2 * t * _soft_ce(query(x1) @ k2.T / t, t1) + 2 * t * _soft_ce(
        query(x2) @ k1.T / t, t2
    )
    torch.testing.assert_close(out.loss, expected)
    assert out.features.shape == (2 * N, 16) and not out.features.requires_grad
    if imix == "none":
        assert out.label_weights is None
    else:
        torch.testing.assert_close(out.label_weights, torch.cat([t1, t2]))
    out.loss.backward()  # the keys are constants: no gradient reaches the momentum encoder
    assert all(p.grad is None for p in method.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.backbone.parameters())


def test_mocov3_momentum_rises_on_a_cosine_from_099_to_1_and_skips_the_predictor() -> None:
    method = _method("mocov3")
    config = method.method_config
    assert (config.temperature, config.momentum, config.momentum_final) == (0.2, 0.99, 1.0)
    before = copy.deepcopy(dict(method.teacher.module.named_parameters()))
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(1.0)
    method.on_optimizer_step(3, 10)
    m = 1.0 - (1.0 - 0.99) * (math.cos(math.pi * 3 / 10) + 1) / 2  # solo-learn's cosine_scheduler
    student = dict(method.encoder.named_parameters())
    for key, value in method.teacher.module.named_parameters():
        torch.testing.assert_close(value, m * before[key] + (1 - m) * student[key])
    teacher_layers = _layers(method.teacher.module)
    assert teacher_layers == _layers(method.encoder)  # backbone + projector, no predictor


def test_mocov3_heads_are_bias_free_with_a_plain_output_batchnorm(toy_cifar_dir: Path) -> None:
    # tiny_tabular_config: projection 16 -> 32 -> 16, predictor 16 -> 32 -> 16; mlp width 16.
    method = _method("mocov3")
    assert _layers(method.encoder.projection) == [
        ("Linear", 16, 32, False), ("BN", 32, 32, True), ("ReLU",),
        ("Linear", 32, 16, False), ("BN", 16, 16, False),
    ]  # fmt: skip
    # Not a ResNet ("mlp"): the predictor ends in a BatchNorm too (MoCo v3's ViT predictor).
    vit_predictor = [
        ("Linear", 16, 32, False), ("BN", 32, 32, True), ("ReLU",), ("Linear", 32, 16, False),
    ]  # fmt: skip
    assert _layers(method.predictor) == [*vit_predictor, ("BN", 16, 16, False)]
    raw = tiny_image_config(Path("unused"), toy_cifar_dir, method={"name": "mocov3"})
    config = config_from_dict(raw)
    assert config.model.backbone == "timm:test_resnet"
    resnet = build_method(config, create_backbone(config.model.backbone))
    assert _layers(resnet.predictor) == vit_predictor  # a ResNet: no output BatchNorm


def test_mocov3_trains_a_tiny_timm_vit(tmp_path: Path, toy_cifar_dir: Path) -> None:
    model = {
        "backbone": "timm:vit_tiny_patch16_224",
        "backbone_kwargs": {"model_kwargs": {"img_size": 8, "patch_size": 4, "depth": 1}},
        "projection_layers": 3,  # MoCo v3's ViT projector
    }
    raw = tiny_image_config(
        tmp_path / "run",
        toy_cifar_dir,
        method={"name": "mocov3"},
        model=model,
        train={"epochs": 1, "batch_size": 40, "knn_every": 0},
    )
    config = config_from_dict(raw)
    result = run_pretrain(config)
    losses = [float(r["loss"]) for r in read_metrics(result.run_dir / "metrics.csv")]
    assert result.step == 2 and len(losses) == 2 and all(math.isfinite(x) for x in losses)
    torch.manual_seed(0)
    method = build_method(config, create_backbone(model["backbone"], **model["backbone_kwargs"]))
    assert [kind[0] for kind in _layers(method.encoder.projection)].count("Linear") == 3
    assert _layers(method.predictor)[-1] == ("BN", 16, 16, False)
    views = [torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)]
    method(views, step=0).loss.backward()
    grads = [p.grad for p in method.backbone.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


# --------------------------------------------------------------------------------------- NNCLR


def _brute_force_neighbours(z: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    rows = []
    for zi in z:
        similarities = [float(zi @ s / (zi.norm() * s.norm())) for s in support]
        rows.append(support[similarities.index(max(similarities))])
    return torch.stack(rows)


@pytest.mark.parametrize("imix", ["none", "mixup"])
def test_nnclr_contrasts_support_neighbours_with_the_other_views_predictions(imix: str) -> None:
    method = _method("nnclr", imix, queue_size=20).eval()
    support = method.support.keys.clone()
    v1, v2 = _views()
    out = method([v1, v2], step=0, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        z1, z2 = method.encoder(v1)[1], method.encoder(v2)[1]
    nn1 = _unit(_brute_force_neighbours(z1, support))
    nn2 = _unit(_brute_force_neighbours(z2, support))
    (x1, t1), (x2, t2) = _mixed([v1, v2], imix)
    p1 = _unit(method.predictor(method.encoder(x1)[1]))
    p2 = _unit(method.predictor(method.encoder(x2)[1]))
    t = 0.1  # the paper's temperature, NNCLR's default
    if imix == "none":  # solo-learn: the neighbours are the anchors
        expected = (_soft_ce(nn1 @ p2.T / t, None) + _soft_ce(nn2 @ p1.T / t, None)) / 2
    else:  # our i-Mix form: the mixed predictions are the anchors
        expected = (_soft_ce(p2 @ nn1.T / t, t2) + _soft_ce(p1 @ nn2.T / t, t1)) / 2
    torch.testing.assert_close(out.loss, expected)
    # After the loss, view 1's clean projections replace the oldest support rows.
    torch.testing.assert_close(method.support.keys[:N], _unit(z1))
    torch.testing.assert_close(method.support.keys[N:], support[N:])
    assert int(method.support.ptr) == N
    if imix != "none":
        torch.testing.assert_close(out.label_weights, torch.cat([t1, t2]))


@pytest.mark.parametrize("imix", ["none", "mixup"])
def test_nnclr_logs_the_share_of_nearest_neighbours_of_the_same_class(imix: str) -> None:
    method = _method("nnclr", imix, queue_size=20).eval()
    v1, v2 = _views()
    labels = torch.arange(N) % 3
    draw = torch.Generator().manual_seed(5)
    first = method([v1, v2], step=0, labels=labels, generator=draw)
    # The support set held only its random initial rows (label -1): no neighbour matches.
    assert first.metrics["nn_top1"].item() == 0.0
    assert method.support.labels is not None
    assert method.support.labels.tolist() == labels.tolist() + [-1] * (20 - N)
    support, support_labels = method.support.keys.clone(), method.support.labels.clone()

    # The same samples again, a third of them relabelled: each projection's nearest support row
    # is its own from step 0 (cosine 1), so 8 of 12 keep their class: 66.67 %.
    relabelled = labels.clone()
    relabelled[: N // 3] += 1
    second = method([v1, v2], step=1, labels=relabelled, generator=draw)
    with torch.no_grad():
        z1 = method.encoder(v1)[1]
    nearest = _brute_force_neighbours(z1, support)
    rows = [int((support == row).all(dim=1).nonzero()[0]) for row in nearest]
    expected = (
        100.0
        * sum(
            int(support_labels[row]) == int(label)
            for row, label in zip(rows, relabelled, strict=True)
        )
        / N
    )
    assert expected == pytest.approx(200 / 3)
    torch.testing.assert_close(second.metrics["nn_top1"], torch.tensor(expected))
    # The 12 new labels went to rows 12..19 and, wrapping, 0..3, with their keys.
    after = relabelled.tolist()
    assert method.support.labels.tolist() == after[8:] + labels.tolist()[4:] + after[:8]

    # Without labels nothing is logged and the new rows (4..15) are unlabelled (-1).
    third = method([v1, v2], step=2, generator=draw)
    assert third.metrics == {}
    assert method.support.labels.tolist() == after[8:] + [-1] * N + after[4:8]


def test_nnclr_preset_builds_the_three_layer_projector_and_the_predictor() -> None:
    method = _method("nnclr")
    assert method.support.keys.shape == (64, 16)  # method.queue_size rows of projection_dim
    assert _layers(method.encoder.projection) == [
        ("Linear", 16, 32, False), ("BN", 32, 32, True), ("ReLU",),
        ("Linear", 32, 32, False), ("BN", 32, 32, True), ("ReLU",),
        ("Linear", 32, 16, False), ("BN", 16, 16, True),
    ]  # fmt: skip
    assert _layers(method.predictor) == [
        ("Linear", 16, 32, False), ("BN", 32, 32, True), ("ReLU",), ("Linear", 32, 16, True),
    ]  # fmt: skip
    assert method.teacher is None


@pytest.mark.parametrize(
    ("name", "imix"), [("mocov3", "none"), ("nnclr", "none"), ("nnclr", "mixup")]
)
def test_state_dict_resumes_the_next_loss_exactly(name: str, imix: str) -> None:
    first = _method(name, imix, queue_size=20)
    first(_views(seed=1), step=0, generator=torch.Generator().manual_seed(1)).loss.backward()
    first.on_optimizer_step(0, 10)  # the teacher moves; NNCLR's support set moved in forward
    resumed = _method(name, imix, queue_size=20)
    with torch.no_grad():  # make every parameter and buffer differ before loading
        for tensor in [*resumed.parameters(), *resumed.buffers()]:
            if tensor.is_floating_point():
                tensor.add_(0.5)
    resumed.load_state_dict(first.state_dict())
    views = _views(seed=2)
    expected = first(views, step=1, generator=torch.Generator().manual_seed(2)).loss
    got = resumed(views, step=1, generator=torch.Generator().manual_seed(2)).loss
    torch.testing.assert_close(got, expected)
    if name == "nnclr":
        assert torch.equal(resumed.support.keys, first.support.keys)
        assert int(resumed.support.ptr) == int(first.support.ptr) == 4  # 3 x 12 rows in 20


# -------------------------------------------------------------------------------------- SupCon


def _hand_supcon(views: list[torch.Tensor], labels: torch.Tensor, t: float, t_base: float):
    """SupContrast's L_out, anchor by anchor: -(T / T_b) * mean over positives of
    log(exp(a.p / T) / sum over every other embedding k of exp(a.k / T))."""
    z = torch.cat([_unit(v) for v in views])
    ids = labels.repeat(len(views))
    total = torch.zeros(())
    for a in range(len(z)):
        others = [k for k in range(len(z)) if k != a]
        log_denominator = torch.logsumexp(torch.stack([z[a] @ z[k] / t for k in others]), 0)
        positives = [p for p in others if ids[p] == ids[a]]
        if positives:
            logs = torch.stack([z[a] @ z[p] / t - log_denominator for p in positives])
            total = total - (t / t_base) * logs.mean()
    return total / len(z)


@pytest.mark.parametrize("count", [2, 3])
def test_supcon_is_l_out_over_every_view_with_the_batch_labels(count: int) -> None:
    method = _method("supcon").eval()
    assert (method.method_config.temperature, method.method_config.base_temperature) == (0.1, 0.07)
    views = _views(count)
    labels = torch.arange(N) % TOY_CLASSES
    out = method(views, step=0, labels=labels)
    z = [method.encoder(v)[1] for v in views]
    torch.testing.assert_close(out.loss, _hand_supcon(z, labels, 0.1, 0.07))
    assert out.features.shape == (2 * N, 16)  # the first two views feed the online classifier
    assert out.label_weights is None
    # The labels matter: each sample its own class is another loss.
    own = method(views, step=0, labels=torch.arange(N)).loss
    torch.testing.assert_close(own, _hand_supcon(z, torch.arange(N), 0.1, 0.07))
    assert not torch.isclose(own, out.loss)


def test_supcon_takes_multi_crop_views_one_forward_per_resolution(toy_cifar_dir: Path) -> None:
    raw = tiny_image_config(Path("unused"), toy_cifar_dir, method={"name": "supcon"})
    config = config_from_dict(raw)
    torch.manual_seed(0)
    method = build_method(config, create_backbone(config.model.backbone)).eval()
    generator = torch.Generator().manual_seed(0)
    sizes = (8, 8, 6, 6, 6)  # 2 global crops, then 3 local ones
    views = [torch.randn(N, 3, s, s, generator=generator) for s in sizes]
    labels = torch.arange(N) % TOY_CLASSES
    calls = []
    hook = method.encoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    out = method(views, step=0, labels=labels)
    hook.remove()
    assert calls == [(2 * N, 3, 8, 8), (3 * N, 3, 6, 6)]
    z = [method.encoder(v)[1] for v in views]
    torch.testing.assert_close(out.loss, _hand_supcon(z, labels, 0.1, 0.07))
    assert out.features.shape[0] == 2 * N  # the global crops only


def test_supcon_needs_labels_refuses_imix_and_has_no_projector_batchnorm() -> None:
    method = _method("supcon")
    with pytest.raises(ValueError, match="needs the batch's class labels"):
        method(_views(), step=0)
    assert all(kind[0] != "BN" for kind in _layers(method.encoder.projection))
    raw = tiny_tabular_config(Path("unused"), method={"name": "supcon", "imix": "mixup"})
    with pytest.raises(ValueError, match="positives are all samples of the anchor's class"):
        config_from_dict(raw)


def test_supcon_is_the_ssl_term_of_joint_training(tmp_path: Path, toy_cifar_dir: Path) -> None:
    raw = tiny_image_config(
        tmp_path / "run",
        toy_cifar_dir,
        method={"name": "supcon"},
        train={"epochs": 1, "batch_size": 40, "knn_every": 0},
    )
    raw["joint"] = {"ssl_weight": 0.5}
    config = config_from_dict(raw, JointTrainingConfig)
    torch.manual_seed(0)
    backbone = create_backbone(config.model.backbone)
    model = JointModel(
        backbone,
        LinearClassifier(backbone.num_features, TOY_CLASSES),
        build_method(config, backbone),
        ssl_weight=0.5,
    ).eval()
    generator = torch.Generator().manual_seed(0)
    views = [torch.randn(8, 3, 8, 8, generator=generator) for _ in range(2)]
    labels = torch.arange(8) % TOY_CLASSES
    out = model(views, labels, step=0)
    z = [model.method.encoder(v)[1] for v in views]
    torch.testing.assert_close(out.ssl, _hand_supcon(z, labels, 0.1, 0.07))
    result = run_joint(config)  # the joint loop hands the batch's labels to the method
    history = read_metrics(result.run_dir / "metrics.csv")
    assert result.step == 2 and all(math.isfinite(float(r["train_ssl"])) for r in history)


def test_nnclr_in_joint_training_logs_nn_top1(tmp_path: Path, toy_cifar_dir: Path) -> None:
    raw = tiny_image_config(
        tmp_path / "run",
        toy_cifar_dir,
        method={"name": "nnclr", "queue_size": 64},
        train={"epochs": 1, "batch_size": 40, "knn_every": 0},
    )
    raw["joint"] = {"ssl_weight": 0.5}
    result = run_joint(config_from_dict(raw, JointTrainingConfig))
    rows = read_metrics(result.run_dir / "metrics.csv")
    assert result.step == 2 and [r["step"] for r in rows] == ["1", "2"]
    assert all(0.0 <= float(r["nn_top1"]) <= 100.0 for r in rows), rows


# ------------------------------------------------------------------------ runs and learning

LEARNING_CASES = [
    ("mocov3", "none"),
    ("mocov3", "mixup"),
    ("nnclr", "none"),
    ("nnclr", "mixup"),
    ("supcon", "none"),
]


@pytest.mark.parametrize(("name", "imix"), LEARNING_CASES)
def test_loss_decreases_on_tabular_toy(tmp_path: Path, name: str, imix: str) -> None:
    raw = tiny_tabular_config(
        tmp_path / "run",
        method={"name": name, "imix": imix, "queue_size": 64},
        optimizer={"lr": 0.5},
        train={"epochs": 2, "batch_size": 32, "warmup_epochs": 0.25, "knn_every": 0},
    )
    result = run_pretrain(config_from_dict(raw), train_data=toy_tabular(512, FEATURES))
    losses = [float(r["loss"]) for r in read_metrics(result.run_dir / "metrics.csv")]
    assert len(losses) == 32
    assert _decreased(losses, skip=2, window=6), losses


@pytest.mark.parametrize("name", ["mocov3", "nnclr", "supcon"])
def test_runs_from_the_smoke_config_with_only_the_method_changed(
    tmp_path: Path, toy_cifar_dir: Path, name: str
) -> None:
    shrink = [
        f"data.data_dir={toy_cifar_dir}",
        "data.image_size=8",
        "data.train_subset=80",
        "data.knn_test_subset=8",
        "train.epochs=1",
        "train.batch_size=40",
        "train.knn_every=0",
        "train.progress_bar=false",
        f"train.output_dir={tmp_path / 'run'}",
    ]
    config = load_config(CONFIG_DIR / "smoke.yaml", [f"method.name={name}", *shrink])
    result = run_pretrain(config)
    rows = read_metrics(result.run_dir / "metrics.csv")
    losses = [float(r["loss"]) for r in rows]
    assert result.step == 2 and len(losses) == 2 and all(math.isfinite(x) for x in losses)
    # Only NNCLR logs the share of nearest support neighbours of the same class (a percentage).
    nn_top1 = [r["nn_top1"] for r in rows]
    if name == "nnclr":
        assert all(0.0 <= float(x) <= 100.0 for x in nn_top1), nn_top1
    else:
        assert nn_top1 == ["", ""]
