"""The five methods: each loss against the objective computed by hand from the method's own modules,
i-Mix targets, EMA teachers and queues, the online classifier, and a learnable toy on which every
method (with and without i-Mix) lowers its loss end to end."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pretrain_helpers import TOY_CLASSES, tiny_tabular_config, toy_images, toy_tabular

from contrastkit.backbones import LinearClassifier, create_backbone
from contrastkit.objectives import (
    byol_loss,
    cosine_momentum,
    imix_cutmix,
    imix_mixup,
    isd_loss,
    moco_loss,
    npair_loss,
    nt_xent_loss,
)
from contrastkit.pipelines.config import config_from_dict
from contrastkit.pipelines.data import InMemoryDataset
from contrastkit.pipelines.methods import METHODS, build_method, method_class
from contrastkit.pipelines.methods.base import (
    PretrainMethod,
    SelfDistillationMethod,
    shuffled_key_forward,
    two_views,
)
from contrastkit.pipelines.metrics import read_metrics
from contrastkit.pipelines.pretrain import PretrainModel, run_pretrain

FEATURES = 6


def _method(name: str, imix: str = "none", **method: object):
    raw = tiny_tabular_config(Path("unused"), method={"name": name, "imix": imix, **method})
    config = config_from_dict(raw)
    torch.manual_seed(0)
    backbone = create_backbone("mlp", in_features=FEATURES, width=16, num_layers=2)
    return build_method(config, backbone)


def _views(n: int = 12) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(n, FEATURES, generator=generator)
    return [x + 0.1 * torch.randn(n, FEATURES, generator=generator), x]


def test_simclr_is_nt_xent_of_the_two_views() -> None:
    method = _method("simclr").eval()  # eval: BatchNorm per sample, so one forward of 2N = two of N
    v1, v2 = _views()
    out = method([v1, v2], step=0)
    z1, z2 = method.encoder(v1)[1], method.encoder(v2)[1]
    torch.testing.assert_close(out.loss, nt_xent_loss(z1, z2, temperature=0.5))
    assert out.features.shape == (24, 16) and not out.features.requires_grad
    assert out.label_weights is None


@pytest.mark.parametrize("imix", ["none", "mixup"])
def test_npair_is_npair_loss_of_mixed_queries(imix: str) -> None:
    method = _method("npair", imix).eval()
    v1, v2 = _views()
    out = method([v1, v2], step=0, generator=torch.Generator().manual_seed(5))
    if imix == "none":
        queries, targets = v1, None
    else:
        queries, targets = imix_mixup(v1, alpha=1.0, generator=torch.Generator().manual_seed(5))
    expected = npair_loss(method.encoder(queries)[1], method.encoder(v2)[1], 0.2, targets)
    torch.testing.assert_close(out.loss, expected)
    if targets is not None:
        torch.testing.assert_close(out.label_weights, torch.cat([targets, torch.eye(12)]))


@pytest.mark.parametrize("imix", ["none", "mixup"])
def test_moco_uses_teacher_keys_and_enqueues_them(imix: str) -> None:
    method = _method("moco", imix, queue_size=20).eval()
    queue_before = method.queue.keys.clone()
    v1, v2 = _views()
    out = method([v1, v2], step=0, generator=torch.Generator().manual_seed(5))
    queries, targets = (
        (v1, None) if imix == "none" else imix_mixup(v1, 1.0, torch.Generator().manual_seed(5))
    )
    k = method.teacher(v2)[1]
    expected = moco_loss(method.encoder(queries)[1], k, queue_before, 0.2, targets)
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(method.queue.keys[:12], F.normalize(k, dim=1))
    torch.testing.assert_close(method.queue.keys[12:], queue_before[12:])
    assert int(method.queue.ptr) == 12


@pytest.mark.parametrize("imix", ["none", "mixup"])
def test_byol_is_symmetric_regression_on_the_target(imix: str) -> None:
    method = _method("byol", imix).eval()
    v1, v2 = _views()
    generator = torch.Generator().manual_seed(5)
    out = method([v1, v2], step=0, generator=generator)
    reference_generator = torch.Generator().manual_seed(5)
    if imix == "none":
        (x1, t1), (x2, t2) = (v1, None), (v2, None)
    else:
        x1, t1 = imix_mixup(v1, 1.0, reference_generator)
        x2, t2 = imix_mixup(v2, 1.0, reference_generator)

    def predict(x: torch.Tensor) -> torch.Tensor:
        return method.predictor(method.encoder(x)[1])

    expected = byol_loss(predict(x1), method.teacher(v2)[1], t1) + byol_loss(
        predict(x2), method.teacher(v1)[1], t2
    )
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("isd_plus", [False, True])
def test_isd_teacher_sees_weak_view_student_strong(isd_plus: bool) -> None:
    method = _method("isd", queue_size=20, isd_plus=isd_plus).eval()
    queue_before = method.queue.keys.clone()
    weak, strong = _views()
    out = method([weak, strong], step=0)
    student = method.predictor(method.encoder(strong)[1])
    teacher = method.teacher(weak)[1]
    temperatures = (0.1, 0.01) if isd_plus else (0.02, 0.02)
    torch.testing.assert_close(out.loss, isd_loss(student, teacher, queue_before, *temperatures))
    torch.testing.assert_close(method.queue.keys[:12], F.normalize(teacher, dim=1))


@pytest.mark.parametrize("name", ["moco", "byol", "isd"])
def test_teacher_follows_the_ema_formula(name: str) -> None:
    method = _method(name)
    teacher_before = copy.deepcopy(dict(method.teacher.module.named_parameters()))
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(1.0)
    method.on_optimizer_step(3, 10)
    m = cosine_momentum(3, 10, method.method_config.momentum, method.method_config.momentum_final)
    student = dict(method.encoder.named_parameters())
    for key, value in method.teacher.module.named_parameters():
        torch.testing.assert_close(value, m * teacher_before[key] + (1 - m) * student[key])
        assert not value.requires_grad
    assert not any(
        id(p) in {id(q) for q in method.teacher.parameters()} for p in method.encoder.parameters()
    )


def test_simclr_has_no_teacher_and_rejects_imix() -> None:
    method = _method("simclr")
    method.on_optimizer_step(0, 10)  # no teacher: nothing to do
    assert method.teacher is None and method.backbones() == [method.backbone]
    config = config_from_dict(
        tiny_tabular_config(Path("unused"), method={"name": "npair", "imix": "mixup"})
    )
    config.method.name = "simclr"  # bypass config validation: the method checks again
    with pytest.raises(ValueError, match="does not support i-Mix"):
        METHODS["simclr"](
            create_backbone("mlp", in_features=FEATURES, width=8, num_layers=1),
            config.method,
            config.model,
        )
    with pytest.raises(ValueError, match=r"needs method\.name='moco'"):
        METHODS["moco"](
            create_backbone("mlp", in_features=FEATURES, width=8, num_layers=1),
            config.method,
            config.model,
        )


DECLARED = (
    "name",
    "supports_imix",
    "default_augment",
    "default_temperature",
    "default_momentum",
    "default_final_momentum",
)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_declares_its_defaults_in_its_own_module(name: str) -> None:
    cls = METHODS[name]
    assert cls.name == name and cls.__module__ == f"contrastkit.pipelines.methods.{name}"
    assert [a for a in DECLARED if a not in vars(cls)] == []
    assert cls.default_augment.endswith("_views")
    # A method with a teacher has a momentum; one without has no momentum to fill in.
    method = _method(name)
    assert (method.teacher is not None) == (cls.default_momentum is not None)
    assert method.method_config.temperature == cls.default_temperature


def test_method_class_rejects_unknown_names_with_a_close_match() -> None:
    assert method_class("isd") is METHODS["isd"]
    with pytest.raises(
        ValueError,
        match=r"method\.name must be one of \['byol', 'isd', 'moco', 'npair', 'simclr'\], "
        r"got 'mocov2' \(did you mean 'moco'\?\)",
    ):
        method_class("mocov2")
    assert SelfDistillationMethod not in METHODS.values()  # abstract: no name


def test_config_validates_and_fills_defaults_from_the_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Toy(PretrainMethod):
        name = "toy"
        supports_imix = True
        default_augment = "byol_views"
        default_temperature = 0.3
        default_momentum = 0.9
        default_final_momentum = None

    with pytest.raises(ValueError, match=r"method\.name must be one of .*got 'toy'"):
        config_from_dict({"method": {"name": "toy"}})
    monkeypatch.setitem(METHODS, "toy", Toy)
    config = config_from_dict({"method": {"name": "toy", "imix": "mixup", "momentum": 0.5}})
    assert (config.method.temperature, config.method.momentum_final) == (0.3, 0.5)
    assert config.data.augment == "byol_views"
    tabular = tiny_tabular_config(Path("unused"), method={"name": "toy"})
    tabular["data"].pop("augment")
    assert config_from_dict(tabular).data.augment == "identity_views"


def test_build_method_passes_the_run_seed_to_the_queue() -> None:
    raw = tiny_tabular_config(Path("unused"), method={"name": "moco", "queue_size": 8})
    raw["train"] = {**raw.get("train", {}), "seed": 7}
    config = config_from_dict(raw)
    backbone = create_backbone("mlp", in_features=FEATURES, width=8, num_layers=1)
    method = build_method(config, backbone)
    assert method.seed == 7 and method.key_seed(2) == 7 * 1_000_003 + 2
    direct = METHODS["moco"](backbone, config.method, config.model, seed=7)
    torch.testing.assert_close(method.queue.keys, direct.queue.keys)
    other = METHODS["moco"](backbone, config.method, config.model)  # seed 0
    assert not torch.equal(other.queue.keys, direct.queue.keys)


def test_single_process_key_forward_is_a_plain_forward() -> None:
    method = _method("moco").eval()
    x = _views()[1]
    torch.testing.assert_close(
        shuffled_key_forward(method.teacher, x, seed=1), method.teacher(x)[1]
    )


def test_one_view_is_used_twice_and_three_are_refused() -> None:
    x = torch.randn(2, 3)
    a, b = two_views([x])
    assert a is x and b is x
    with pytest.raises(ValueError, match="take 1 or 2 views, got 3"):
        two_views([x, x, x])


def test_online_classifier_trains_on_mixed_soft_labels() -> None:
    method = _method("npair", "mixup").eval()
    torch.manual_seed(1)
    classifier = LinearClassifier(method.num_features, TOY_CLASSES)
    model = PretrainModel(method, classifier).eval()
    v1, v2 = _views()
    labels = torch.arange(12) % TOY_CLASSES
    out = model([v1, v2], labels, step=0, generator=torch.Generator().manual_seed(5))
    mixed, targets = imix_mixup(v1, 1.0, torch.Generator().manual_seed(5))
    features = torch.cat([method.encoder(mixed)[0], method.encoder(v2)[0]])
    # Hand-written soft labels: feature row i of the mixed half takes lam_i of its own label and
    # 1 - lam_i of its partner's; the clean half takes its own label.
    soft = torch.zeros(24, TOY_CLASSES)
    for i in range(12):
        for j in range(12):
            soft[i, labels[j]] += targets[i, j]
        soft[12 + i, labels[i]] = 1.0
    logits = classifier(features)
    online = -(soft * F.log_softmax(logits, dim=1)).sum(1).mean()
    torch.testing.assert_close(out.loss - out.ssl_loss, online)
    assert 0.0 <= float(out.online_correct) <= 1.0
    # The classifier reads detached features: its loss sends no gradient into the backbone.
    online_loss = out.loss - out.ssl_loss
    grads = torch.autograd.grad(online_loss, list(method.backbone.parameters()), allow_unused=True)
    assert all(g is None or not g.any() for g in grads)


def test_mixed_cutmix_batch_is_what_the_method_contrasts() -> None:
    # cutmix needs images: a tiny image npair step equals npair_loss on imix_cutmix's output.
    raw = tiny_tabular_config(Path("unused"), method={"name": "npair", "imix": "cutmix"})
    raw["data"] = {"dataset": "cifar10"}
    raw["model"] = {
        "backbone": "timm:test_resnet",
        "projection_hidden_dim": 16,
        "projection_dim": 8,
    }
    config = config_from_dict(raw)
    torch.manual_seed(0)
    method = build_method(config, create_backbone("timm:test_resnet")).eval()
    views = [torch.randn(6, 3, 8, 8), torch.randn(6, 3, 8, 8)]
    out = method(views, step=0, generator=torch.Generator().manual_seed(2))
    mixed, targets = imix_cutmix(views[0], 1.0, torch.Generator().manual_seed(2))
    expected = npair_loss(method.encoder(mixed)[1], method.encoder(views[1])[1], 0.2, targets)
    torch.testing.assert_close(out.loss, expected)


# ------------------------------------------------------------------ end to end on a learnable toy

LEARNING_CASES = [
    ("simclr", "none"),
    ("npair", "none"),
    ("npair", "mixup"),
    ("moco", "none"),
    ("moco", "mixup"),
    ("byol", "none"),
    ("byol", "mixup"),
    ("isd", "none"),
]


def _decreased(losses: list[float], skip: int, window: int) -> bool:
    """Mean loss of the last `window` steps below the mean of the `window` steps after `skip`.

    The first steps are skipped because MoCo's and ISD's losses first RISE while the random initial
    queue fills with real keys (harder negatives / anchors), whatever the network learns.
    """
    early = losses[skip : skip + window]
    return sum(losses[-window:]) / window < sum(early) / window


@pytest.mark.parametrize(
    ("name", "imix"), LEARNING_CASES, ids=[f"{n}-{i}" for n, i in LEARNING_CASES]
)
def test_loss_decreases_on_tabular_toy(tmp_path: Path, name: str, imix: str) -> None:
    raw = tiny_tabular_config(
        tmp_path / "run",
        method={"name": name, "imix": imix, "queue_size": 64},
        optimizer={"lr": 0.5},
        train={"epochs": 2, "batch_size": 32, "warmup_epochs": 0.25, "knn_every": 2, "knn_k": 20},
    )
    train, test = toy_tabular(512, FEATURES), toy_tabular(64, FEATURES, seed=1)
    result = run_pretrain(config_from_dict(raw), train_data=train, test_data=test)
    rows = read_metrics(result.run_dir / "metrics.csv")
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 32 and result.step == 32
    assert _decreased(losses, skip=2, window=6), losses
    assert 0.0 <= float(rows[-1]["knn_top1"]) <= 100.0


@pytest.mark.parametrize("name", ["npair", "moco", "byol"])
def test_cutmix_loss_decreases_on_image_toy(tmp_path: Path, name: str) -> None:
    images, labels = toy_images(96, seed=0)
    data = InMemoryDataset(
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(labels),
        [str(c) for c in range(TOY_CLASSES)],
        "image",
    )
    raw = tiny_tabular_config(
        tmp_path / "run",
        method={"name": name, "imix": "cutmix", "queue_size": 32},
        optimizer={"lr": 0.5},
        train={"epochs": 2, "batch_size": 16, "warmup_epochs": 0.25},
    )
    raw["model"] = {
        "backbone": "timm:test_resnet",
        "projection_hidden_dim": 32,
        "projection_dim": 16,
        "prediction_hidden_dim": 32,
    }
    raw["data"] = {"dataset": "cifar10", "image_size": 16, "augment": "simclr_views"}
    result = run_pretrain(config_from_dict(raw), train_data=data)
    losses = [float(r["loss"]) for r in read_metrics(result.run_dir / "metrics.csv")]
    assert len(losses) == 12
    assert _decreased(losses, skip=2, window=3), losses
