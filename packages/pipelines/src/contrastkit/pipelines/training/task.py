"""What the training loop trains and reports: the `TrainingTask` hooks, what a task sees at an
epoch end, how a run ended, and the error a non-finite loss raises.

Pretraining (`pretrain.PretrainTask`) and joint training (`joint.JointTask`) are subclasses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from accelerate import Accelerator
from torch import Tensor, nn

from contrastkit.pipelines.config import PretrainConfig
from contrastkit.pipelines.data import InMemoryDataset


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the run stopped without checkpointing the bad state."""


@dataclass
class TrainingResult:
    """How a training run (pretraining or joint training) ended.

    run_dir: the output directory. step: optimizer steps done. epoch: epochs completed.
    checkpoint: the last checkpoint folder written (None if none was). stopped_by: "SIGTERM" /
    "SIGINT" / "SIGHUP" when a signal stopped the run early, "launcher exit" (stop.LAUNCHER_EXIT)
    when the launcher that started it exited, else None. A run stopped after a step saved a
    checkpoint of that step first; one stopped before its first step saved nothing (checkpoint
    is then the one it resumed from, or None).
    """

    run_dir: Path
    step: int
    epoch: int
    checkpoint: Path | None
    stopped_by: str | None = None


# The 0.1 name, kept: run_pretrain and run_joint have always returned it.
PretrainResult = TrainingResult


@dataclass
class EpochEnd:
    """What a task sees at the end of an epoch (main process only)."""

    model: nn.Module  # the unwrapped model (never the DDP wrapper)
    config: PretrainConfig
    run_dir: Path
    epoch: int  # epochs completed (1-based)
    step: int  # optimizer steps done
    lr: float  # learning rate of the epoch's last step
    train_means: dict[str, float]  # the model's logged values, mean over the epoch and processes
    test: InMemoryDataset | None  # the test split on the device (data.knn_test_subset applied)
    transform: Callable[[Tensor], Tensor]  # uint8 batch -> normalized evaluation view
    accelerator: Accelerator
    elapsed_s: float  # seconds since this process started the loop


class TrainingTask(ABC):
    """What `training.loop.run_training(config, task)` trains and reports.

    The loop owns the data, accelerate, the optimizer and schedule, checkpoints, exact resume,
    signals, the NaN stop, metrics.csv, the kNN monitor and curves.png, and calls the hooks
    below. The model `build_model` returns exposes `backbone` (saved as backbone.pt),
    `backbones()` (what model.compile compiles), `on_optimizer_step(step, total_steps)`,
    `after_backward(epoch)` (called before the optimizer step's clipping and update) and
    `forward(views, labels, *, step, epoch, generator)` returning an object with `.loss`
    (backpropagated) and `.logged()` (metrics.csv column -> scalar tensor of the batch; averaged
    over the logged steps and the epoch). With train.online_linear it also has `classifier`
    (the monitor's online classifier, reading backbone features).

    A subclass names its command line (`name`, `command`, `description`, `example`), its
    config class and its metrics.csv header, and builds the model; the other hooks do nothing
    unless overridden.
    """

    name: ClassVar[str]  # meta.json "task", the progress bar's label, the TensorBoard tag folder
    command: ClassVar[str]  # the console script, in messages
    description: ClassVar[str]  # --help
    example: ClassVar[str]  # --help epilog
    config_class: ClassVar[type[PretrainConfig]]
    metric_columns: ClassVar[tuple[str, ...]]  # metrics.csv header

    @abstractmethod
    def build_model(
        self, config: PretrainConfig, backbone: nn.Module, num_classes: int
    ) -> nn.Module:
        """The module to train around a fresh `backbone` (called after seeding, on the CPU)."""

    def decay_exclusions(self, model: nn.Module) -> list[nn.Module]:
        """Modules whose parameters get no weight decay (besides biases and norms)."""
        return []

    def static_lr_modules(self, model: nn.Module) -> list[nn.Module]:
        """Modules whose learning rate stays at the peak lr (no warm-up, no decay): the method's
        `static_lr_modules()` (SimSiam's predictor)."""
        method = getattr(model, "method", None)
        return list(method.static_lr_modules()) if method is not None else []

    def needs_test_split(self, config: PretrainConfig) -> bool:
        """Load the test split even when no kNN / online monitor asks for it."""
        return False

    def start(  # noqa: B027 - an optional hook: doing nothing is its default
        self, config: PretrainConfig, run_dir: Path, resumed_epoch: int | None
    ) -> None:
        """Before the first step (main process); resumed_epoch: epochs the checkpoint completed."""

    def evaluate(self, end: EpochEnd) -> dict[str, Any]:
        """At an epoch end, before its metrics row is written: extra columns for that row."""
        return {}

    def epoch_done(self, end: EpochEnd, row: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """At an epoch end, after its metrics row and curves.png are written (main process)."""

    def checkpoint_files(self, model: nn.Module) -> dict[str, Any]:
        """Extra files of every checkpoint folder: name -> object for torch.save."""
        return {}

    def checkpoint_meta(self, config: PretrainConfig) -> dict[str, Any]:
        """Extra meta.json entries."""
        return {}

    def progress_label(self, config: PretrainConfig) -> str:
        """The progress bar's label, e.g. "pretrain simclr"."""
        return f"{self.name} {config.method.name}"
