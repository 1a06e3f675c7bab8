"""Optimizers and LR schedule against hand-computed updates and the closed-form schedule."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from contrastkit.pipelines.config import OptimizerConfig
from contrastkit.pipelines.optim import (
    LARS,
    WarmupCosine,
    WarmupStep,
    build_optimizer,
    build_scheduler,
    parameter_groups,
    scaled_lr,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_groups_exempt_biases_norms_excluded_and_frozen() -> None:
    net = _net()
    head = nn.Linear(3, 2)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    model = nn.ModuleDict({"net": net, "head": head, "frozen": frozen})
    groups = {g["name"]: g for g in parameter_groups(model, 0.1, exclude=[head])}
    decay = {id(p) for p in groups["decay"]["params"]}
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    assert decay == {id(net[0].weight), id(net[3].weight)}
    assert no_decay == {
        id(p) for p in (net[0].bias, net[1].weight, net[1].bias, net[3].bias, *head.parameters())
    }
    assert not ({id(p) for p in frozen.parameters()} & (decay | no_decay))
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0


@pytest.mark.parametrize("name", ["sgd", "lars", "adamw"])
def test_weight_decay_only_touches_decay_group(name: str) -> None:
    # With zero gradients, a step moves only weights under weight decay (plain SGD/LARS: w *= 1 - lr wd').
    net = _net()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    optimizer = build_optimizer(net, OptimizerConfig(name=name, weight_decay=0.5), lr=0.1)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for n, p in net.named_parameters():
        moved = not torch.equal(p, before[n])
        assert moved == (p.ndim > 1), n


def test_sgd_decayed_step_matches_formula() -> None:
    net = nn.Linear(3, 2)
    weight, bias = net.weight.detach().clone(), net.bias.detach().clone()
    optimizer = build_optimizer(
        net, OptimizerConfig(name="sgd", weight_decay=0.1, momentum=0.9), lr=0.5
    )
    gw, gb = torch.randn(2, 3), torch.randn(2)
    net.weight.grad, net.bias.grad = gw.clone(), gb.clone()
    optimizer.step()
    torch.testing.assert_close(net.weight.detach(), weight - 0.5 * (gw + 0.1 * weight))
    torch.testing.assert_close(net.bias.detach(), bias - 0.5 * gb)


def test_lars_matches_hand_computed_steps() -> None:
    torch.manual_seed(1)
    w = nn.Parameter(torch.randn(3, 4))
    b = nn.Parameter(torch.randn(3))
    lr, momentum, wd, eta = 0.3, 0.9, 0.01, 0.02
    optimizer = LARS(
        [
            {"params": [w], "weight_decay": wd, "lars_adapt": True},
            {"params": [b], "weight_decay": 0.0, "lars_adapt": False},
        ],
        lr=lr,
        momentum=momentum,
        eta=eta,
    )
    w_ref, b_ref = w.detach().clone().double(), b.detach().clone().double()
    buf_w = buf_b = None
    for _ in range(3):
        gw, gb = torch.randn(3, 4), torch.randn(3)
        w.grad, b.grad = gw.clone(), gb.clone()
        optimizer.step()
        # reference, written out per element in float64
        w_norm = math.sqrt(sum(x * x for x in w_ref.flatten().tolist()))
        g_norm = math.sqrt(sum(x * x for x in gw.double().flatten().tolist()))
        trust = eta * w_norm / (g_norm + wd * w_norm + 1e-12)
        d_w = (gw.double() + wd * w_ref) * trust
        buf_w = d_w if buf_w is None else momentum * buf_w + d_w
        w_ref = w_ref - lr * buf_w
        buf_b = gb.double() if buf_b is None else momentum * buf_b + gb.double()
        b_ref = b_ref - lr * buf_b
    torch.testing.assert_close(w.detach().double(), w_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.detach().double(), b_ref, rtol=1e-5, atol=1e-6)


def test_lars_zero_weight_uses_trust_one() -> None:
    w = nn.Parameter(torch.zeros(2, 2))
    optimizer = LARS([w], lr=1.0, momentum=0.0, eta=0.02)
    w.grad = torch.ones(2, 2)
    optimizer.step()
    torch.testing.assert_close(w.detach(), -torch.ones(2, 2))


def test_lars_rejects_bad_arguments() -> None:
    w = [nn.Parameter(torch.zeros(1))]
    for kwargs, message in [
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr": 1.0, "momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"lr": 1.0, "eta": 0.0}, "eta must be > 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            LARS(w, **kwargs)


def test_warmup_cosine_against_formula() -> None:
    schedule = WarmupCosine(warmup_steps=4, total_steps=14, final=0.1)
    expected = [(s + 1) / 4 for s in range(4)]
    expected += [0.1 + 0.9 * (1 + math.cos(math.pi * (s - 4) / 10)) / 2 for s in range(4, 15)]
    assert [schedule(s) for s in range(15)] == pytest.approx(expected)
    assert schedule(4) == pytest.approx(1.0) and schedule(14) == pytest.approx(0.1)
    assert WarmupCosine(0, 10)(0) == 1.0
    with pytest.raises(ValueError, match=r"warmup_steps must be in \[0, total_steps=10\]"):
        WarmupCosine(11, 10)
    with pytest.raises(ValueError, match="total_steps must be >= 1"):
        WarmupCosine(0, 0)


def _cosine_scheduler(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    # 2 warm-up steps of 6: 2 steps per epoch, 3 epochs, 1 warm-up epoch
    config = OptimizerConfig(name="sgd", final_lr_fraction=0.0)
    return build_scheduler(optimizer, config, steps_per_epoch=2, epochs=3, warmup_epochs=1.0)


def test_scheduler_steps_every_group_and_round_trips() -> None:
    net = _net()
    optimizer = build_optimizer(net, OptimizerConfig(name="sgd"), lr=2.0)
    scheduler = _cosine_scheduler(optimizer)
    lrs = []
    for _ in range(6):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert [row[0] for row in lrs] == pytest.approx(
        [1.0, 2.0, 2.0, 1.0 + math.cos(math.pi / 4), 1.0, 1.0 - math.cos(math.pi / 4)]
    )
    assert all(len(set(row)) == 1 for row in lrs)
    fresh = _cosine_scheduler(build_optimizer(_net(), OptimizerConfig(), lr=2.0))
    fresh.load_state_dict(scheduler.state_dict())
    assert fresh.last_epoch == 6


def test_scaled_lr_rule() -> None:
    assert scaled_lr(OptimizerConfig(lr=0.4, scale_lr=True), 1024) == pytest.approx(1.6)
    assert scaled_lr(OptimizerConfig(lr=0.4, scale_lr=False), 1024) == 0.4
    with pytest.raises(ValueError, match="global_batch must be >= 1"):
        scaled_lr(OptimizerConfig(), 0)


# ---------------------------------------------------------------- LARS clip_lr (solo-learn)


def _norm(values: list[float]) -> float:
    return math.sqrt(sum(v * v for v in values))


def _lars_reference(
    w: list[float],
    grads: list[list[float]],
    lrs: list[float],
    *,
    wd: float,
    eta: float,
    momentum: float,
    clip: bool,
    eps: float,
) -> tuple[list[float], list[str]]:
    """solo-learn's LARS step (solo/utils/lars.py) on a flat list of floats, step by step.

    Returns the final weights and, per step, whether the clip was "clipped" (r / lr > 1: the
    factor is 1), "scaled" (factor r / lr) or "off" (no clip).
    """
    buf: list[float] | None = None
    branches = []
    for g, lr in zip(grads, lrs, strict=True):
        p_norm, g_norm = _norm(w), _norm(g)
        r = eta * p_norm / (g_norm + wd * p_norm + eps)
        if clip:
            branches.append("clipped" if r / lr > 1 else "scaled")
            r = min(r / lr, 1.0)
        else:
            branches.append("off")
        d = [(gi + wd * wi) * r for gi, wi in zip(g, w)]
        buf = d if buf is None else [momentum * bi + di for bi, di in zip(buf, d)]
        w = [wi - lr * bi for wi, bi in zip(w, buf)]
    return w, branches


@pytest.mark.parametrize("clip", [False, True])
def test_lars_clip_lr_two_steps_against_formula(clip: bool) -> None:
    # Two weight matrices: `small_grad`'s trust rate r exceeds lr (clip -> plain SGD at lr),
    # `large_grad`'s stays below it (clip -> factor r / lr). The lr changes between the steps as a
    # schedule would change it, so lr_t must be the group's current lr. Biases are excluded.
    torch.manual_seed(3)
    net = nn.ModuleDict({"small_grad": nn.Linear(4, 3), "large_grad": nn.Linear(3, 2)})
    wd, eta, momentum, lrs = 1e-4, 0.02, 0.9, [0.5, 0.05]
    config = OptimizerConfig(
        name="lars", weight_decay=wd, lars_eta=eta, momentum=momentum, clip_lr=clip
    )
    optimizer = build_optimizer(net, config, lr=lrs[0])
    grad_scale = {"small_grad": 1e-3, "large_grad": 10.0}
    grads = {
        name: [torch.randn_like(p) * grad_scale[name.split(".")[0]] for _ in lrs]
        for name, p in net.named_parameters()
    }
    start = {name: p.detach().double().flatten().tolist() for name, p in net.named_parameters()}
    for step, lr in enumerate(lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        for name, p in net.named_parameters():
            p.grad = grads[name][step].clone()
        optimizer.step()
    eps = 1e-8 if clip else 1e-12  # solo-learn's eps with its clip; ours as before without
    expected_branches = {"small_grad": "clipped", "large_grad": "scaled"}
    for name, p in net.named_parameters():
        flat_grads = [g.double().flatten().tolist() for g in grads[name]]
        if name.endswith("bias"):  # exclude_bias_and_norm: plain SGD with momentum, no decay
            buf = flat_grads[0]
            w = [wi - lrs[0] * bi for wi, bi in zip(start[name], buf)]
            buf = [momentum * bi + gi for bi, gi in zip(buf, flat_grads[1])]
            w = [wi - lrs[1] * bi for wi, bi in zip(w, buf)]
        else:
            w, branches = _lars_reference(
                start[name], flat_grads, lrs, wd=wd, eta=eta, momentum=momentum, clip=clip, eps=eps
            )
            layer = name.split(".")[0]
            assert branches == ([expected_branches[layer]] * 2 if clip else ["off", "off"])
        torch.testing.assert_close(
            p.detach().double().flatten(),
            torch.tensor(w, dtype=torch.float64),
            rtol=1e-5,
            atol=1e-7,
        )


def test_lars_clip_changes_the_step() -> None:
    # ||w|| = 2, ||g|| = 2e-3: r = 0.02 * 2 / 2e-3 = 20 > lr, so with the clip the layer steps
    # at lr (min(r, lr) * g), without it at lr * r * g.
    steps = {}
    for clip in (False, True):
        w = nn.Parameter(torch.ones(2, 2, dtype=torch.float64))
        optimizer = LARS([w], lr=0.1, momentum=0.0, eta=0.02, clip_lr=clip)
        w.grad = torch.full((2, 2), 1e-3, dtype=torch.float64)
        optimizer.step()
        steps[clip] = (1.0 - w.detach()).mean().item()
    assert steps[True] == pytest.approx(0.1 * 1e-3)
    assert steps[False] == pytest.approx(0.1 * 20.0 * 1e-3)


def test_lars_zero_norm_rules() -> None:
    # solo-learn (skip_zero_norm, taken with clip_lr): no ratio -> d = g, so a zero gradient does
    # not decay the weight. Earlier rule: d = g + wd * w at trust 1.
    for skip, expected in [(True, 1.0), (False, 1.0 - 0.5 * 0.1)]:
        w = nn.Parameter(torch.ones(2, 2))
        optimizer = LARS([w], lr=0.5, momentum=0.0, weight_decay=0.1, eta=0.02, skip_zero_norm=skip)
        w.grad = torch.zeros(2, 2)
        optimizer.step()
        torch.testing.assert_close(w.detach(), torch.full((2, 2), expected))
    for skip in (True, False):  # zero weight: d = g either way (weight decay adds 0)
        w = nn.Parameter(torch.zeros(2, 2))
        optimizer = LARS([w], lr=1.0, momentum=0.0, weight_decay=0.1, skip_zero_norm=skip)
        w.grad = torch.ones(2, 2)
        optimizer.step()
        torch.testing.assert_close(w.detach(), -torch.ones(2, 2))


@pytest.mark.parametrize("clip", [False, True])
def test_build_optimizer_takes_solo_learn_eps_and_zero_norm_rule_with_clip(clip: bool) -> None:
    # Norms of the order of eps make eps visible: ||w|| = ||g|| = 1e-8, so
    # r = 0.02 * 1e-8 / (1e-8 + 0.1 * 1e-8 + eps) is ~0.0095 with solo-learn's 1e-8 (below lr 1:
    # no clipping) and ~0.018 with our earlier 1e-12. A second weight with a zero gradient is
    # decayed only under the earlier rule.
    net = nn.ModuleDict({"tiny": nn.Linear(2, 2, bias=False), "still": nn.Linear(2, 2, bias=False)})
    net = net.double()
    with torch.no_grad():
        net["tiny"].weight.fill_(0.5e-8)
        net["still"].weight.fill_(1.0)
    wd, lr = 0.1, 1.0
    config = OptimizerConfig(name="lars", weight_decay=wd, momentum=0.0, clip_lr=clip)
    optimizer = build_optimizer(net, config, lr=lr)
    net["tiny"].weight.grad = torch.full((2, 2), 0.5e-8, dtype=torch.float64)
    net["still"].weight.grad = torch.zeros(2, 2, dtype=torch.float64)
    optimizer.step()
    eps = 1e-8 if clip else 1e-12
    trust = 0.02 * 1e-8 / (1e-8 + wd * 1e-8 + eps)
    if clip:
        assert trust / lr < 1.0
    tiny = 0.5e-8 - lr * (0.5e-8 + wd * 0.5e-8) * trust
    torch.testing.assert_close(
        net["tiny"].weight.detach(),
        torch.full((2, 2), tiny, dtype=torch.float64),
        rtol=1e-9,
        atol=0,
    )
    still = 1.0 if clip else 1.0 - lr * wd * 1.0  # solo-learn: d = g = 0; earlier: d = wd * w
    torch.testing.assert_close(
        net["still"].weight.detach(), torch.full((2, 2), still, dtype=torch.float64)
    )


def test_lars_loads_groups_saved_before_clip_lr() -> None:
    # A checkpoint from before clip_lr / eps / skip_zero_norm: its groups lack those keys.
    w = nn.Parameter(torch.ones(2, 2))
    optimizer = LARS([w], lr=0.1, clip_lr=True)
    saved = optimizer.state_dict()
    for key in ("clip_lr", "eps", "skip_zero_norm"):
        del saved["param_groups"][0][key]
    optimizer.load_state_dict(saved)
    assert optimizer.param_groups[0]["clip_lr"] is True
    w.grad = torch.ones(2, 2)
    optimizer.step()


# ---------------------------------------------------------------- exclude_bias_and_norm


@pytest.mark.parametrize("exclude", [True, False])
def test_exclude_bias_and_norm_groups(exclude: bool) -> None:
    net = _net()
    head = nn.Linear(3, 2)
    model = nn.ModuleDict({"net": net, "head": head})
    groups = {
        g["name"]: g
        for g in parameter_groups(model, 0.1, exclude=[head], exclude_bias_and_norm=exclude)
    }
    decay = {id(p) for p in groups["decay"]["params"]}
    one_dim = {id(p) for p in (net[0].bias, net[1].weight, net[1].bias, net[3].bias)}
    weights = {id(net[0].weight), id(net[3].weight)}
    assert decay == (weights if exclude else weights | one_dim)
    # the online classifier keeps its own handling either way: no decay, no trust scaling
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    assert {id(p) for p in head.parameters()} <= no_decay
    assert groups["no_decay"]["lars_adapt"] is False


@pytest.mark.parametrize("name", ["sgd", "lars"])
@pytest.mark.parametrize("exclude", [True, False])
def test_bias_update_with_and_without_exclusion(name: str, exclude: bool) -> None:
    torch.manual_seed(4)
    net = nn.Linear(3, 2)
    bias = net.bias.detach().double().tolist()
    lr, wd, eta = 0.5, 0.1, 0.02
    config = OptimizerConfig(
        name=name, weight_decay=wd, momentum=0.9, lars_eta=eta, exclude_bias_and_norm=exclude
    )
    optimizer = build_optimizer(net, config, lr=lr)
    gb = torch.randn(2)
    net.weight.grad, net.bias.grad = torch.randn(2, 3), gb.clone()
    optimizer.step()
    g = gb.double().tolist()
    if exclude:  # plain SGD step, no decay
        expected = [b - lr * gi for b, gi in zip(bias, g)]
    elif name == "sgd":  # decayed
        expected = [b - lr * (gi + wd * b) for b, gi in zip(bias, g)]
    else:  # decayed and trust-scaled
        trust = eta * _norm(bias) / (_norm(g) + wd * _norm(bias) + 1e-12)
        expected = [b - lr * (gi + wd * b) * trust for b, gi in zip(bias, g)]
    torch.testing.assert_close(
        net.bias.detach().double(),
        torch.tensor(expected, dtype=torch.float64),
        rtol=1e-5,
        atol=1e-7,
    )


# ---------------------------------------------------------------- step schedule


def _isd_lr(base: float, step: int, steps_per_epoch: int, milestones: list[int]) -> float:
    """UMBCvision/ISD util.py adjust_learning_rate, called at the start of each 1-indexed epoch."""
    epoch = step // steps_per_epoch + 1
    return base * 0.2 ** sum(epoch > m for m in milestones)


def _step_run(warmup_epochs: float, steps: int, resume_at: int | None = None) -> list[float]:
    """The lr of each optimizer step of a step-schedule run (3 steps per epoch, 6 epochs, decay
    at epochs 2 and 4), optionally saved and restored at `resume_at` as training/resume.py does."""
    config = OptimizerConfig(name="sgd", schedule="step", lr_decay_epochs=(2, 4), lr=1.0)

    def build() -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        optimizer = build_optimizer(_net(), config, lr=1.0)
        scheduler = build_scheduler(
            optimizer, config, steps_per_epoch=3, epochs=6, warmup_epochs=warmup_epochs
        )
        return optimizer, scheduler

    optimizer, scheduler = build()
    lrs = []
    for step in range(steps):
        if step == resume_at:
            buffer = io.BytesIO()
            torch.save({"o": optimizer.state_dict(), "s": scheduler.state_dict()}, buffer)
            buffer.seek(0)
            saved = torch.load(buffer, weights_only=True)
            optimizer, scheduler = build()
            optimizer.load_state_dict(saved["o"])
            scheduler_state = dict(saved["s"])
            scheduler_state["lr_lambdas"] = [None] * len(scheduler_state["lr_lambdas"])
            scheduler.load_state_dict(scheduler_state)
        lrs.append(scheduler.get_last_lr()[0])
        assert all(g["lr"] == lrs[-1] for g in optimizer.param_groups)
        optimizer.step()
        scheduler.step()
    return lrs


def test_step_schedule_matches_isd_boundaries() -> None:
    lrs = _step_run(warmup_epochs=0.0, steps=18)
    assert lrs == pytest.approx([_isd_lr(1.0, s, 3, [2, 4]) for s in range(18)])
    # the first decayed lr is at optimizer step 2 * 3 = 6 (ISD's epoch 3), the second at 12
    assert lrs[5] == 1.0 and lrs[6] == pytest.approx(0.2)
    assert lrs[11] == pytest.approx(0.2) and lrs[12] == pytest.approx(0.04)


def test_step_schedule_with_warmup() -> None:
    lrs = _step_run(warmup_epochs=1.0, steps=18)
    expected = [(s + 1) / 3 if s < 3 else _isd_lr(1.0, s, 3, [2, 4]) for s in range(18)]
    assert lrs == pytest.approx(expected)


def test_step_schedule_resumes_mid_run() -> None:
    for resume_at in (4, 6, 7):
        assert _step_run(1.0, 18, resume_at=resume_at) == _step_run(1.0, 18)


def test_warmup_step_against_formula() -> None:
    schedule = WarmupStep(warmup_steps=4, boundaries=(2, 6), factor=0.5)
    expected = [min((s + 1) / 4, 1.0) * 0.5 ** ((s >= 2) + (s >= 6)) for s in range(9)]
    assert [schedule(s) for s in range(9)] == pytest.approx(expected)
    with pytest.raises(ValueError, match="boundaries must be non-decreasing"):
        WarmupStep(0, (5, 3), 0.2)
    with pytest.raises(ValueError, match=r"factor must be in \(0, 1\]"):
        WarmupStep(0, (3,), 0.0)


@pytest.mark.parametrize("name", ["sgd", "lars"])
def test_static_lr_modules_keep_the_peak_lr_while_the_rest_follow_the_schedule(name: str) -> None:
    # SimSiam's predictor (solo-learn `static_lr`, facebookresearch/simsiam `--fix-pred-lr`).
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    predictor = model[2]
    config = OptimizerConfig(name=name, lr=0.5, weight_decay=1e-4, schedule="warmup_cosine")
    optimizer = build_optimizer(model, config, 0.5, static_lr=[predictor])
    names = [group["name"] for group in optimizer.param_groups]
    assert names == ["decay", "no_decay", "decay_static_lr", "no_decay_static_lr"]
    static_ids = {id(p) for p in predictor.parameters()}
    for group in optimizer.param_groups:
        is_static = group["name"].endswith("_static_lr")
        assert all((id(p) in static_ids) == is_static for p in group["params"])
    assert [p.ndim for p in optimizer.param_groups[2]["params"]] == [2]  # the weight decays
    assert optimizer.param_groups[3]["weight_decay"] == 0.0  # its bias does not
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=5, epochs=2, warmup_epochs=1)
    for step in range(10):
        warm = (step + 1) / 5 if step < 5 else (1 + math.cos(math.pi * (step - 5) / 5)) / 2
        lrs = [group["lr"] for group in optimizer.param_groups]
        assert lrs[:2] == pytest.approx([0.5 * warm] * 2)
        assert lrs[2:] == [0.5, 0.5]
        optimizer.step()
        scheduler.step()
    # The schedule resumes from its state_dict with the static groups still static.
    state = scheduler.state_dict()
    again = build_scheduler(optimizer, config, steps_per_epoch=5, epochs=2, warmup_epochs=1)
    again.load_state_dict(state)
    assert again.get_last_lr()[2:] == [0.5, 0.5]
