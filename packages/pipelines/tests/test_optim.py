"""Optimizers and LR schedule against hand-computed updates and the closed-form schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from contrastkit.pipelines.config import OptimizerConfig
from contrastkit.pipelines.optim import (
    LARS,
    WarmupCosine,
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


def test_scheduler_steps_every_group_and_round_trips() -> None:
    net = _net()
    optimizer = build_optimizer(net, OptimizerConfig(name="sgd"), lr=2.0)
    scheduler = build_scheduler(optimizer, warmup_steps=2, total_steps=6, final_lr_fraction=0.0)
    lrs = []
    for _ in range(6):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert [row[0] for row in lrs] == pytest.approx(
        [1.0, 2.0, 2.0, 1.0 + math.cos(math.pi / 4), 1.0, 1.0 - math.cos(math.pi / 4)]
    )
    assert all(len(set(row)) == 1 for row in lrs)
    fresh = build_scheduler(build_optimizer(_net(), OptimizerConfig(), lr=2.0), 2, 6, 0.0)
    fresh.load_state_dict(scheduler.state_dict())
    assert fresh.last_epoch == 6


def test_scaled_lr_rule() -> None:
    assert scaled_lr(OptimizerConfig(lr=0.4, scale_lr=True), 1024) == pytest.approx(1.6)
    assert scaled_lr(OptimizerConfig(lr=0.4, scale_lr=False), 1024) == 0.4
    with pytest.raises(ValueError, match="global_batch must be >= 1"):
        scaled_lr(OptimizerConfig(), 0)
