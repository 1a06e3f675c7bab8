"""The training commands' entry points (`contrastkit-pretrain`, `contrastkit-joint`, and the
repository's pretrain.py and joint.py): each command names its task by module, so its command
line and config are checked before the task's module, and torch with it, is imported."""

from __future__ import annotations

from collections.abc import Sequence

from contrastkit.pipelines.config import JointTrainingConfig, PretrainConfig
from contrastkit.pipelines.training.command import TaskCommand, run_task_command

PRETRAIN = TaskCommand(
    "contrastkit-pretrain", PretrainConfig, "contrastkit.pipelines.pretrain:PretrainTask"
)
JOINT = TaskCommand(
    "contrastkit-joint", JointTrainingConfig, "contrastkit.pipelines.joint:JointTask"
)


def pretrain_main(argv: Sequence[str] | None = None) -> int:
    """`contrastkit-pretrain` on `argv` (default: sys.argv[1:]); the exit status."""
    return run_task_command(PRETRAIN, argv)


def joint_main(argv: Sequence[str] | None = None) -> int:
    """`contrastkit-joint` on `argv` (default: sys.argv[1:]); the exit status."""
    return run_task_command(JOINT, argv)
