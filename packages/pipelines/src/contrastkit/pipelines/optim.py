"""Optimizers and the learning-rate schedule of the pretrain loop.

SGD, LARS and AdamW over parameter groups that exempt biases and norm layers from weight decay
(and from LARS's layer-wise scaling), and a per-step cosine schedule with linear warmup.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from contrastkit.pipelines.config.sections import LR_REFERENCE_BATCH, OptimizerConfig


def scaled_lr(config: OptimizerConfig, global_batch: int) -> float:
    """The peak learning rate: `lr * global_batch / 256` when `scale_lr`, else `lr`.

    global_batch: images per optimizer step over all processes
    (batch_size per device * processes * grad_accum).
    """
    if global_batch < 1:
        raise ValueError(f"global_batch must be >= 1, got {global_batch}")
    return config.lr * global_batch / LR_REFERENCE_BATCH if config.scale_lr else config.lr


def parameter_groups(
    model: nn.Module, weight_decay: float, *, exclude: Iterable[nn.Module] = ()
) -> list[dict]:
    """Split the trainable parameters of `model` into optimizer groups.

    "decay": weights with >= 2 dims (conv kernels, linear matrices), with `weight_decay` and LARS
    adaptation. "no_decay": biases and norm-layer scales/shifts (1-dim tensors) - decaying them
    only shrinks the network's ability to shift and scale activations. Parameters of the
    `exclude` modules (e.g. the online linear classifier) go to "no_decay" too. Frozen
    parameters (requires_grad=False, e.g. EMA teachers) are left out.
    """
    excluded = {id(p) for module in exclude for p in module.parameters()}
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim <= 1 or id(parameter) in excluded:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "lars_adapt": True, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "lars_adapt": False, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017), as SimCLR/BYOL use it.

    For a group with `lars_adapt` true, each parameter's step is scaled by the trust ratio
    `eta * ||w|| / (||g|| + weight_decay * ||w|| + 1e-12)` (1 when either norm is 0):
        d = (g + weight_decay * w) * trust;  buf = momentum * buf + d;  w -= lr * buf
    Groups with `lars_adapt` false (biases, norms) take plain SGD steps with their own weight decay.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        nesterov: bool = False,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if eta <= 0:
            raise ValueError(f"eta must be > 0, got {eta}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "nesterov": nesterov,
            "lars_adapt": True,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads: list[Tensor] = [p.grad for p in params]  # type: ignore[misc]
            weight_decay = group["weight_decay"]
            if group["lars_adapt"]:
                weight_norms = torch._foreach_norm(params)
                grad_norms = torch._foreach_norm(grads)
                trusts = [
                    torch.where(
                        (w > 0) & (g > 0), group["eta"] * w / (g + weight_decay * w + 1e-12), 1.0
                    )
                    for w, g in zip(weight_norms, grad_norms)
                ]
            if weight_decay:
                grads = torch._foreach_add(grads, params, alpha=weight_decay)
            if group["lars_adapt"]:
                grads = torch._foreach_mul(grads, trusts)
            momentum = group["momentum"]
            if momentum:
                buffers = []
                for p, d in zip(params, grads):
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d.clone()
                    else:
                        state["momentum_buffer"].mul_(momentum).add_(d)
                    buffers.append(state["momentum_buffer"])
                grads = (
                    torch._foreach_add(grads, buffers, alpha=momentum)
                    if group["nesterov"]
                    else buffers
                )
            torch._foreach_add_(params, grads, alpha=-group["lr"])
        return loss


def build_optimizer(
    model: nn.Module,
    config: OptimizerConfig,
    lr: float,
    *,
    exclude_from_decay: Iterable[nn.Module] = (),
) -> torch.optim.Optimizer:
    """The optimizer named by `config.name` over `parameter_groups(model, ...)`, at peak `lr`."""
    groups = parameter_groups(model, config.weight_decay, exclude=exclude_from_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if config.name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=0.0
        )
    if config.name == "lars":
        return LARS(
            groups, lr=lr, momentum=config.momentum, eta=config.lars_eta, nesterov=config.nesterov
        )
    if config.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=config.betas, eps=config.eps)
    raise ValueError(f"optimizer.name must be one of sgd, lars, adamw, got {config.name!r}")


@dataclass
class WarmupCosine:
    """LR multiplier at optimizer step `step` (0-based): linear warmup, then half a cosine.

    step < warmup_steps: (step + 1) / warmup_steps; afterwards
    final + (1 - final) * (1 + cos(pi * (step - warmup_steps) / (total_steps - warmup_steps))) / 2,
    reaching `final` (= final_lr_fraction) at step total_steps. A picklable callable, so
    LambdaLR's state_dict keeps it.
    """

    warmup_steps: int
    total_steps: int
    final: float = 0.0

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(
                f"warmup_steps must be in [0, total_steps={self.total_steps}], got {self.warmup_steps}"
            )

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.final + (1.0 - self.final) * (1.0 + math.cos(math.pi * progress)) / 2.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, final_lr_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step with `WarmupCosine` for every group."""
    schedule = WarmupCosine(warmup_steps, total_steps, final_lr_fraction)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
