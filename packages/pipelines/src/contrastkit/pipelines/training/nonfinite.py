"""The NaN stop: a loss that stopped being finite on any process, or parameters that did, end the
run with NonFiniteLossError before that state can be checkpointed."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from contrastkit.pipelines.training.task import NonFiniteLossError


def check_finite_loss(
    accelerator: Accelerator, nonfinite: Tensor, step: int, last_checkpoint: Path | None
) -> None:
    """Raise NonFiniteLossError on every process if any process saw a non-finite loss.

    nonfinite: () bool on the device, True when a loss since the last check was not finite.
    step: optimizer steps done. last_checkpoint: the run's newest checkpoint (None: none yet).
    """
    bad = accelerator.reduce(nonfinite.float(), reduction="sum")
    if bad.item() > 0:
        raise NonFiniteLossError(
            f"the loss became NaN or infinite at or before step {step}; stopping without "
            f"checkpointing this state ({_last_good(last_checkpoint)}). "
            "Try a lower optimizer.lr, train.clip_grad, or bf16 instead of fp16."
        )


def check_finite_parameters(model: nn.Module, step: int, last_checkpoint: Path | None) -> None:
    """Raise NonFiniteLossError if a parameter of `model` (the unwrapped model) is not finite."""
    # A finite loss can still leave inf/NaN weights behind (an exploding update): never save those.
    finite = torch.stack([p.isfinite().all() for p in model.parameters()]).all()
    if not bool(finite):
        raise NonFiniteLossError(
            f"the model's parameters became NaN or infinite at step {step}; stopping without "
            f"checkpointing this state ({_last_good(last_checkpoint)}). "
            "Try a lower optimizer.lr or train.clip_grad."
        )


def _last_good(last_checkpoint: Path | None) -> str:
    if last_checkpoint is None:
        return "no checkpoint was written yet"
    return f"the last good checkpoint is {last_checkpoint}"
