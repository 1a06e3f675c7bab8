"""The five methods: each loss against the objective computed by hand from the method's own modules,
i-Mix targets, EMA teachers and queues, the online classifier, and a learnable toy on which every
method (with and without i-Mix) lowers its loss end to end. The recipe options: symmetric MoCo with
one queue per direction, separate forwards per view, no projection head, the projection's output
BatchNorm, and the heads the ISD / ISD-plus presets build."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pretrain_helpers import (
    TOY_CLASSES,
    tabular_method,
    tiny_tabular_config,
    toy_images,
    toy_tabular,
)
from torch import nn

from contrastkit.backbones import LinearClassifier, create_backbone
from contrastkit.objectives import (
    MemoryQueue,
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


_method = tabular_method


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
    with pytest.raises(
        ValueError,
        match=r"method\.imix='mixup' is defined only for methods.*got method\.name='simclr'",
    ):
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


DECLARED = ("name", "supports_imix", "default_augment", "default_temperature")
TEACHER_DECLARED = ("default_momentum", "default_final_momentum")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_declares_its_defaults_in_its_own_module(name: str) -> None:
    cls = METHODS[name]
    assert cls.name == name and cls.__module__ == f"contrastkit.pipelines.methods.{name}"
    assert cls.default_augment.endswith("_views")
    # A method with a teacher has a momentum; one without has no momentum to fill in.
    method = _method(name)
    assert (method.teacher is not None) == (cls.default_momentum is not None)
    declared = DECLARED + (TEACHER_DECLARED if method.teacher is not None else ())
    assert [a for a in declared if a not in vars(cls)] == []
    assert method.method_config.temperature == cls.default_temperature


def test_method_class_rejects_unknown_names_with_a_close_match() -> None:
    assert method_class("isd") is METHODS["isd"]
    with pytest.raises(
        ValueError,
        match=r"method\.name must be one of \['barlow_twins', 'byol', 'dino', 'isd', 'moco', 'mocov3', 'nnclr', 'npair', 'simclr', 'simsiam', 'supcon', 'swav', 'vicreg'\], "
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


# ------------------------------------------------------------------ symmetric MoCo (MoCo V2+)


def _hand_moco(q, k, queue, temperature: float, targets=None) -> torch.Tensor:
    """InfoNCE of each query, one sample at a time: positive k_i and the queue's rows (MoCo), or
    with i-Mix's soft targets every in-batch key and the queue (i-Mix's `mocon`)."""
    q, k, queue = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(queue, dim=1)
    total = q.new_zeros(())
    for i in range(q.shape[0]):
        if targets is None:
            logits = torch.cat([(q[i] * k[i]).sum().view(1), queue @ q[i]]) / temperature
            total = total - torch.log_softmax(logits, dim=0)[0]
        else:
            logits = torch.cat([k @ q[i], queue @ q[i]]) / temperature
            log_p = torch.log_softmax(logits, dim=0)[: k.shape[0]]
            total = total - (targets[i] * log_p).sum()
    return total / q.shape[0]


def _hand_enqueue(queue: torch.Tensor, ptr: int, keys: torch.Tensor) -> int:
    """FIFO: each normalised key row overwrites row `ptr`, which then moves on (wrapping)."""
    for row in F.normalize(keys, dim=1):
        queue[ptr] = row
        ptr = (ptr + 1) % queue.shape[0]
    return ptr


@pytest.mark.parametrize("imix", ["none", "mixup"])
def test_symmetric_moco_is_solo_learns_two_directions_with_a_queue_each(imix: str) -> None:
    method = _method("moco", imix, queue_size=20, symmetric=True).eval()
    assert not torch.equal(method.queue.keys, method.view1_queue.keys)  # two random starts
    view2_queue, view1_queue = method.queue.keys.clone(), method.view1_queue.keys.clone()
    ptr = 0
    generator = torch.Generator().manual_seed(5)
    reference_generator = torch.Generator().manual_seed(5)
    for step, seed in enumerate([3, 4]):  # 12 keys into 20 rows: the second step wraps around
        generator_views = torch.Generator().manual_seed(seed)
        v1 = torch.randn(12, FEATURES, generator=generator_views)
        v2 = v1 + 0.1 * torch.randn(12, FEATURES, generator=generator_views)
        out = method([v1, v2], step=step, generator=generator)
        if imix == "none":
            (x1, t1), (x2, t2) = (v1, None), (v2, None)
        else:  # i-Mix mixes each query side, view 1 first
            x1, t1 = imix_mixup(v1, 1.0, reference_generator)
            x2, t2 = imix_mixup(v2, 1.0, reference_generator)
        with torch.no_grad():
            q1, q2 = method.encoder(x1)[1], method.encoder(x2)[1]
            k1, k2 = method.teacher(v1)[1], method.teacher(v2)[1]
            # q1 meets past view-2 keys, q2 past view-1 keys; the loss is the mean of the two.
            expected = (
                _hand_moco(q1, k2, view2_queue, 0.2, t1) + _hand_moco(q2, k1, view1_queue, 0.2, t2)
            ) / 2
        torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)
        # Both queues are written after the loss: view-2 keys to `queue`, view-1 to `view1_queue`.
        _hand_enqueue(view2_queue, ptr, k2)
        ptr = _hand_enqueue(view1_queue, ptr, k1)
        torch.testing.assert_close(method.queue.keys, view2_queue)
        torch.testing.assert_close(method.view1_queue.keys, view1_queue)
        assert int(method.queue.ptr) == int(method.view1_queue.ptr) == ptr
        assert out.features.shape == (24, 16)
        if imix == "none":
            assert out.label_weights is None
        else:
            torch.testing.assert_close(out.label_weights, torch.cat([t1, t2]))


def test_symmetric_moco_queues_resume_exactly_from_the_state_dict() -> None:
    first = _method("moco", queue_size=20, symmetric=True).train()
    v1, v2 = _views()
    first([v1, v2], step=0)
    state = first.state_dict()
    assert {"queue.keys", "queue.ptr", "view1_queue.keys", "view1_queue.ptr"} <= set(state)
    raw = tiny_tabular_config(
        Path("unused"), method={"name": "moco", "queue_size": 20, "symmetric": True}
    )
    backbone = create_backbone("mlp", in_features=FEATURES, width=16, num_layers=2)
    resumed = build_method(config_from_dict(raw), backbone).train()
    resumed.load_state_dict(copy.deepcopy(state))
    a, b = first([v2, v1], step=1), resumed([v2, v1], step=1)
    assert torch.equal(a.loss, b.loss)
    assert torch.equal(first.view1_queue.keys, resumed.view1_queue.keys)
    assert torch.equal(first.queue.keys, resumed.queue.keys)
    # Without symmetric there is one queue, under the name it always had.
    assert not any(key.startswith("view1_queue") for key in _method("moco").state_dict())


# ------------------------------------------------------------------ separate forwards per view


def _hand_loss(method, v1: torch.Tensor, v2: torch.Tensor, separate: bool) -> torch.Tensor:
    """The method's loss with every network run by hand: each view alone (separate) or the two
    views concatenated (one BatchNorm batch), in training mode."""

    def run(network, xs):
        if separate:
            outs = [network(x) for x in xs]
            return [o[1] for o in outs]
        return list(network(torch.cat(xs))[1].chunk(len(xs)))

    name = method.name
    if name == "simclr":
        z1, z2 = run(method.encoder, [v1, v2])
        return nt_xent_loss(z1, z2, temperature=0.5)
    if name == "npair":
        z1, z2 = run(method.encoder, [v1, v2])
        return npair_loss(z1, z2, temperature=0.2)
    if name == "byol":
        z1, z2 = run(method.encoder, [v1, v2])
        if separate:
            p1, p2 = method.predictor(z1), method.predictor(z2)
        else:
            p1, p2 = method.predictor(torch.cat([z1, z2])).chunk(2)
        with torch.no_grad():
            t2, t1 = run(method.teacher, [v2, v1])
        return byol_loss(p1, t2) + byol_loss(p2, t1)
    q1, q2 = run(method.encoder, [v1, v2])  # symmetric MoCo
    with torch.no_grad():
        k1, k2 = run(method.teacher, [v1, v2])
    return (
        moco_loss(q1, k2, method.queue.keys, 0.2) + moco_loss(q2, k1, method.view1_queue.keys, 0.2)
    ) / 2


def _running_means(module: nn.Module) -> list[torch.Tensor]:
    return [m.running_mean.clone() for m in module.modules() if isinstance(m, nn.BatchNorm1d)]


@pytest.mark.parametrize("name", ["simclr", "npair", "byol", "moco"])
@pytest.mark.parametrize("separate", [True, False])
def test_separate_forwards_give_each_view_its_own_batchnorm_batch(
    name: str, separate: bool
) -> None:
    extra = {"symmetric": True, "queue_size": 20} if name == "moco" else {}
    method = _method(name, separate_forwards=separate, **extra).train()
    reference = copy.deepcopy(method)  # same weights, queues and BatchNorm buffers
    v1, v2 = _views()
    out = method([v1, v2], step=0)
    expected = _hand_loss(reference, v1, v2, separate)
    if separate:
        torch.testing.assert_close(out.loss, expected)
    else:  # today's single forward of both views, bit for bit
        assert torch.equal(out.loss, expected)
    # The running statistics saw the same batches: one per view, or one of both views.
    for got, want in zip(_running_means(method), _running_means(reference), strict=True):
        torch.testing.assert_close(got, want)
    # And the two ways differ in training mode (each view standardised by its own statistics).
    other = _method(name, separate_forwards=not separate, **extra).train()
    assert not torch.allclose(other([v1, v2], step=0).loss, out.loss)


@pytest.mark.parametrize("name", ["moco", "isd"])
def test_separate_forwards_change_nothing_where_each_network_sees_one_view(name: str) -> None:
    v1, v2 = _views()
    losses = [
        _method(name, queue_size=20, separate_forwards=flag).train()([v1, v2], step=0).loss
        for flag in (False, True)
    ]
    assert torch.equal(losses[0], losses[1])


# ------------------------------------------------------------------ heads: none, output BN, presets


def _preset_method(isd_plus: bool, width: int = 512):
    """ISD with every head field left to the preset, on a `width`-feature backbone."""
    raw = tiny_tabular_config(Path("unused"), method={"name": "isd", "queue_size": 20})
    raw["method"]["isd_plus"] = isd_plus
    raw["model"] = {"backbone": "mlp", "backbone_kwargs": {"width": width, "num_layers": 1}}
    config = config_from_dict(raw)
    torch.manual_seed(0)
    backbone = create_backbone("mlp", in_features=FEATURES, width=width, num_layers=1)
    return config, build_method(config, backbone)


def _layers(module: nn.Module) -> list[tuple]:
    """(kind, in, out, has bias) of each Linear and (kind, width) of each BatchNorm1d, in order."""
    found: list[tuple] = []
    for m in module.modules():
        if isinstance(m, nn.Linear):
            found.append(("linear", m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.BatchNorm1d):
            found.append(("bn", m.num_features))
    return found


def test_isd_preset_has_no_projection_head_and_enqueues_teacher_backbone_features() -> None:
    config, method = _preset_method(isd_plus=False)
    assert config.model.projection_layers == 0
    assert (config.method.momentum, config.method.momentum_final) == (0.999, 0.999)
    temperatures = (config.method.student_temperature, config.method.teacher_temperature)
    assert temperatures == (0.02, 0.02)
    assert isinstance(method.encoder.projection, nn.Identity)
    assert isinstance(method.teacher.module.projection, nn.Identity)
    assert _layers(method.encoder) == _layers(method.encoder.backbone)  # nothing after it
    # train_isd_r18.py's predictor: Linear(feat, feat, bias=False), BN, ReLU, Linear(feat, feat).
    assert _layers(method.predictor) == [
        ("linear", 512, 512, False),
        ("bn", 512),
        ("linear", 512, 512, True),
    ]
    assert method.queue.keys.shape == (20, 512)
    method.eval()
    queue_before = method.queue.keys.clone()
    weak, strong = _views()
    out = method([weak, strong], step=0)
    with torch.no_grad():
        keys = method.teacher.module.backbone(weak)  # the teacher's backbone, no head
        student = method.predictor(method.encoder.backbone(strong))
    torch.testing.assert_close(out.loss, isd_loss(student, keys, queue_before, 0.02, 0.02))
    torch.testing.assert_close(method.queue.keys[:12], F.normalize(keys, dim=1))
    torch.testing.assert_close(method.queue.keys[12:], queue_before[12:])


def test_isd_plus_preset_builds_its_projection_and_predictor() -> None:
    config, method = _preset_method(isd_plus=True)
    assert config.method.momentum == 0.99
    temperatures = (config.method.student_temperature, config.method.teacher_temperature)
    assert temperatures == (0.1, 0.01)
    # train_isd_plus.py on a 512-feature backbone: get_mlp(512, 1024, 128) as the projection of
    # student and teacher, get_mlp(128, 1024, 128) as the predictor (its first Linear's bias is
    # dropped here: the BatchNorm after it cancels it).
    mlp = [("linear", 512, 1024, False), ("bn", 1024), ("linear", 1024, 128, True)]
    assert _layers(method.encoder.projection) == mlp
    assert _layers(method.teacher.module.projection) == mlp
    assert _layers(method.predictor) == [
        ("linear", 128, 1024, False),
        ("bn", 1024),
        ("linear", 1024, 128, True),
    ]
    assert method.queue.keys.shape == (20, 128)


@pytest.mark.parametrize("name", sorted(set(METHODS) - {"dino"}))
def test_without_projection_head_every_method_sizes_from_the_backbone(name: str) -> None:
    method = _method(name, model={"projection_layers": 0}, queue_size=20)
    assert isinstance(method.encoder.projection, nn.Identity) and method.embedding_dim == 16
    if isinstance(getattr(method, "queue", None), MemoryQueue):
        assert method.queue.keys.shape == (20, 16)
    if hasattr(method, "predictor"):
        assert (method.predictor.in_dim, method.predictor.out_dim) == (16, 16)
    labels = torch.arange(12) % 4  # read by supervised methods (supcon) only
    generator = torch.Generator().manual_seed(1)
    out = method.train()(_views(), step=0, labels=labels, generator=generator)
    assert torch.isfinite(out.loss)


def test_dinos_head_needs_its_mlp_and_says_so() -> None:
    with pytest.raises(ValueError, match=r"model\.projection_layers >= 1.*got 0"):
        _method("dino", model={"projection_layers": 0})


def test_projection_output_batch_norm_standardises_the_projections() -> None:
    method = _method("moco", model={"projection_output_batch_norm": True}).train()
    for head in (method.encoder.projection, method.teacher.module.projection):
        assert _layers(head) == [
            ("linear", 16, 32, False),
            ("bn", 32),
            ("linear", 32, 16, False),
            ("bn", 16),
        ]
    z = method.encoder(_views()[0])[1]
    torch.testing.assert_close(z.mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(0, unbiased=False), torch.ones(16), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match=r"needs a head, got model\.projection_layers=0"):
        _method("moco", model={"projection_output_batch_norm": True, "projection_layers": 0})


# ------------------------------------------------------------------ end to end on a learnable toy

LEARNING_CASES = [
    ("simclr", "none", {}),
    ("simclr", "none", {"separate_forwards": True}),
    ("npair", "none", {}),
    ("npair", "mixup", {}),
    ("moco", "none", {}),
    ("moco", "mixup", {}),
    ("moco", "mixup", {"symmetric": True, "separate_forwards": True}),
    ("byol", "none", {}),
    ("byol", "none", {"separate_forwards": True}),
    ("byol", "mixup", {}),
    ("isd", "none", {}),
]
LEARNING_IDS = [f"{n}-{i}{''.join(f'-{k}' for k in extra)}" for n, i, extra in LEARNING_CASES]


def _decreased(losses: list[float], skip: int, window: int) -> bool:
    """Mean loss of the last `window` steps below the mean of the `window` steps after `skip`.

    The first steps are skipped because MoCo's and ISD's losses first RISE while the random initial
    queue fills with real keys (harder negatives / anchors), whatever the network learns.
    """
    early = losses[skip : skip + window]
    return sum(losses[-window:]) / window < sum(early) / window


@pytest.mark.parametrize(("name", "imix", "extra"), LEARNING_CASES, ids=LEARNING_IDS)
def test_loss_decreases_on_tabular_toy(
    tmp_path: Path, name: str, imix: str, extra: dict[str, bool]
) -> None:
    method = {"name": name, "imix": imix, "queue_size": 64, **extra}
    if name in ("moco", "isd"):
        # 32 steps: the recipes' constant 0.999 would leave the teacher near its random start.
        method["momentum"] = 0.99
    raw = tiny_tabular_config(
        tmp_path / "run",
        method=method,
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
