"""Optimizers and the learning-rate schedules of the pretrain loop.

SGD, LARS and AdamW over parameter groups that may exempt biases and norm layers from weight decay
(and from LARS's layer-wise scaling), and a per-step schedule: linear warm-up, then a cosine or
step decay.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from contrastkit.pipelines.config.sections import LR_REFERENCE_BATCH, OptimizerConfig

# solo-learn's LARS epsilon (solo/utils/lars.py, `eps=1e-8`); contrastkit's own LARS used 1e-12.
SOLO_LEARN_LARS_EPS = 1e-8
LARS_EPS = 1e-12


def scaled_lr(config: OptimizerConfig, global_batch: int) -> float:
    """The peak learning rate: `lr * global_batch / 256` when `scale_lr`, else `lr`.

    global_batch: images per optimizer step over all processes
    (batch_size per device * processes * grad_accum).
    """
    if global_batch < 1:
        raise ValueError(f"global_batch must be >= 1, got {global_batch}")
    return config.lr * global_batch / LR_REFERENCE_BATCH if config.scale_lr else config.lr


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    exclude: Iterable[nn.Module] = (),
    exclude_bias_and_norm: bool = True,
    static_lr: Iterable[nn.Module] = (),
) -> list[dict]:
    """Split the trainable parameters of `model` into optimizer groups.

    "decay": parameters with `weight_decay` and LARS adaptation. "no_decay": weight decay 0 and
    plain (unscaled) steps. With `exclude_bias_and_norm` (the default) biases and norm-layer
    scales/shifts (tensors with <= 1 dim) go to "no_decay", as SimCLR/BYOL and solo-learn's LARS
    recipes do; without it they are decayed (and trust-scaled) like the weights, as MoCo, ISD
    and i-Mix decay every parameter. Parameters of the `exclude` modules (e.g. the online linear
    classifier, an evaluation probe) always go to "no_decay". Frozen parameters
    (requires_grad=False, e.g. EMA teachers) are left out.

    Parameters of the `static_lr` modules (SimSiam's predictor) go to the groups
    "decay_static_lr" / "no_decay_static_lr", split by the same rule and marked `static_lr`:
    `build_scheduler` keeps their rate at the peak lr throughout (no warm-up, no decay), as
    solo-learn's `static_lr` groups and SimSiam's `--fix-pred-lr`. They come after the others,
    so group 0 is always a scheduled group.
    """
    excluded = {id(p) for module in exclude for p in module.parameters()}
    static = {id(p) for module in static_lr for p in module.parameters()}
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {
        (s, d): [] for s in (False, True) for d in (True, False)
    }
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        no_decay = id(parameter) in excluded or (exclude_bias_and_norm and parameter.ndim <= 1)
        buckets[(id(parameter) in static, not no_decay)].append(parameter)
    groups = []
    for (is_static, decays), params in buckets.items():
        if not params:
            continue
        group = {
            "params": params,
            "weight_decay": weight_decay if decays else 0.0,
            "lars_adapt": decays,
            "name": ("decay" if decays else "no_decay") + ("_static_lr" if is_static else ""),
        }
        if is_static:
            group["static_lr"] = True
        groups.append(group)
    return groups


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017), as SimCLR/BYOL use it.

    For a group with `lars_adapt` true, each parameter w with gradient g, at the group's current
    (scheduled) lr_t, steps by
        r = eta * ||w|| / (||g|| + weight_decay * ||w|| + eps)
        r = min(r / lr_t, 1)                      (only with clip_lr)
        d = (g + weight_decay * w) * r;  buf = d (first step), else momentum * buf + d
        w -= lr_t * buf                           (lr_t * (d + momentum * buf) with nesterov)
    so with clip_lr the gradient enters with the rate min(r, lr_t): plain SGD at lr_t wherever the
    trust-scaled rate would exceed it. This is solo-learn's LARS (solo/utils/lars.py, whose
    `exclude_bias_n_norm` is our "no_decay" group, see `parameter_groups`).

    When ||w|| or ||g|| is 0 there is no ratio. With `skip_zero_norm` (solo-learn's rule) such a
    parameter steps by d = g: no weight decay, no scaling. Without it (contrastkit's earlier rule,
    kept so that runs without clip_lr step as before) d = g + weight_decay * w. The two differ only
    when g is exactly 0 (with w = 0, weight decay adds nothing). `build_optimizer` takes solo-learn's
    rule and its eps 1e-8 together with clip_lr, and 1e-12 with the earlier rule otherwise.
    Groups with `lars_adapt` false (biases, norms, the online classifier) take plain SGD steps
    with their own weight decay. Differences from solo-learn that remain: the online classifier
    is not trust-scaled here (solo-learn scales its weight matrix, with weight decay 0).
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        nesterov: bool = False,
        *,
        clip_lr: bool = False,
        eps: float = LARS_EPS,
        skip_zero_norm: bool = False,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if eta <= 0:
            raise ValueError(f"eta must be > 0, got {eta}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "eta": eta,
            "nesterov": nesterov,
            "lars_adapt": True,
            "clip_lr": clip_lr,
            "eps": eps,
            "skip_zero_norm": skip_zero_norm,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        # Groups loaded from a checkpoint written before clip_lr/eps/skip_zero_norm existed.
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    @staticmethod
    def _trust_ratios(group: dict, params: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
        """Per parameter, the 0-dim factor r multiplying (g + weight_decay * w); see the class doc."""
        weight_decay, eta, eps = group["weight_decay"], group["eta"], group["eps"]
        trusts = []
        for w, g in zip(torch._foreach_norm(params), torch._foreach_norm(grads)):
            ratio = eta * w / (g + weight_decay * w + eps)
            if group["clip_lr"]:
                ratio = torch.clamp(ratio / group["lr"], max=1.0)
            # No ratio without both norms: d = g (factor 0 when g = 0) or g + weight_decay * w.
            fallback = (g > 0).to(ratio.dtype) if group["skip_zero_norm"] else 1.0
            trusts.append(torch.where((w > 0) & (g > 0), ratio, fallback))
        return trusts

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
                trusts = self._trust_ratios(group, params, grads)
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
    static_lr: Iterable[nn.Module] = (),
) -> torch.optim.Optimizer:
    """The optimizer named by `config.name` over `parameter_groups(model, ...)`, at peak `lr`."""
    groups = parameter_groups(
        model,
        config.weight_decay,
        exclude=exclude_from_decay,
        exclude_bias_and_norm=config.exclude_bias_and_norm,
        static_lr=static_lr,
    )
    if not groups:
        raise ValueError("the model has no trainable parameters")
    if config.name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=0.0
        )
    if config.name == "lars":
        # clip_lr is solo-learn's option and only its recipes set it: with it, take solo-learn's
        # eps and zero-norm rule too, so the step is its formula; without it, step as before.
        solo_learn = config.clip_lr
        return LARS(
            groups,
            lr=lr,
            momentum=config.momentum,
            eta=config.lars_eta,
            nesterov=config.nesterov,
            clip_lr=config.clip_lr,
            eps=SOLO_LEARN_LARS_EPS if solo_learn else LARS_EPS,
            skip_zero_norm=solo_learn,
        )
    if config.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=config.betas, eps=config.eps)
    raise ValueError(f"optimizer.name must be one of sgd, lars, adamw, got {config.name!r}")


def _warmup(step: int, warmup_steps: int) -> float:
    """Linear warm-up factor at optimizer step `step` (0-based): (step + 1) / warmup_steps, then 1."""
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


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
            return _warmup(step, self.warmup_steps)
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.final + (1.0 - self.final) * (1.0 + math.cos(math.pi * progress)) / 2.0


@dataclass
class StaticLR:
    """LR multiplier 1 at every step: the rate of a `static_lr` group stays at the peak lr.
    A picklable callable, so LambdaLR's state_dict keeps it."""

    def __call__(self, step: int) -> float:
        return 1.0


@dataclass
class WarmupStep:
    """LR multiplier at optimizer step `step` (0-based): linear warm-up times a step decay.

    warmup(step) * factor ** (number of boundaries b with step >= b), where warmup(step) is
    (step + 1) / warmup_steps before warmup_steps and 1 after. `boundaries` are optimizer steps:
    the decayed rate applies from step b itself. A boundary inside the warm-up multiplies it.
    A picklable callable, so LambdaLR's state_dict keeps it.
    """

    warmup_steps: int
    boundaries: tuple[int, ...]
    factor: float

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if list(self.boundaries) != sorted(self.boundaries) or any(b < 0 for b in self.boundaries):
            raise ValueError(f"boundaries must be non-decreasing steps >= 0, got {self.boundaries}")
        if not 0.0 < self.factor <= 1.0:
            raise ValueError(f"factor must be in (0, 1], got {self.factor}")

    def __call__(self, step: int) -> float:
        passed = sum(step >= b for b in self.boundaries)
        return _warmup(step, self.warmup_steps) * self.factor**passed


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    config: OptimizerConfig,
    *,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step, with `config.schedule` for every group but
    those marked `static_lr` (see `parameter_groups`), which keep the peak lr (`StaticLR`).

    warm-up: round(warmup_epochs * steps_per_epoch) steps (at most the run's). "warmup_cosine":
    `WarmupCosine` to `final_lr_fraction` at the run's last step. "step": `WarmupStep` with
    `lr_decay_factor` applied once per epoch e in `lr_decay_epochs`, from optimizer step
    round(e * steps_per_epoch): after e whole epochs. That is ISD's rule (UMBCvision/ISD
    util.py `adjust_learning_rate`: lr * 0.2 ** sum(epoch > lr_decay_epochs), epochs counted
    from 1), so with lr_decay_epochs [90, 120] the decayed lr first applies to the first step of
    ISD's epoch 91, our optimizer step 90 * steps_per_epoch (counted from 0). Epochs past the
    run never apply.
    """
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(
            f"steps_per_epoch and epochs must be >= 1, got {steps_per_epoch}, {epochs}"
        )
    total_steps = steps_per_epoch * epochs
    warmup_steps = min(round(warmup_epochs * steps_per_epoch), total_steps)
    schedule: WarmupCosine | WarmupStep
    if config.schedule == "warmup_cosine":
        schedule = WarmupCosine(warmup_steps, total_steps, config.final_lr_fraction)
    elif config.schedule == "step":
        boundaries = tuple(round(e * steps_per_epoch) for e in config.lr_decay_epochs)
        schedule = WarmupStep(warmup_steps, boundaries, config.lr_decay_factor)
    else:
        raise ValueError(
            f"optimizer.schedule must be one of warmup_cosine, step, got {config.schedule!r}"
        )
    groups = optimizer.param_groups
    if not any(group.get("static_lr") for group in groups):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    lambdas = [StaticLR() if group.get("static_lr") else schedule for group in groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
