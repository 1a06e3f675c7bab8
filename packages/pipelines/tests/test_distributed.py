"""Two CPU processes (gloo) give the per-step losses of one process on the same global batch, also
across a signal-stopped and resumed run; with a BatchNorm-free backbone the only difference is
floating-point summation order."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
from pretrain_helpers import (
    SIGNAL_DRIVER,
    launch_two_processes,
    tiny_image_config,
    write_yaml,
)

from contrastkit.pipelines.checkpoint import list_checkpoints, read_meta
from contrastkit.pipelines.metrics import read_metrics
from contrastkit.pipelines.pretrain import main
from contrastkit.pipelines.run_files import rank_state_file

# A BN-free setup: timm's test ViT (LayerNorm) at 8x8, a projection head without BN, and the
# deterministic identity view (random crops would differ between one process and two).
BN_FREE = {
    "model": {
        "backbone": "timm:test_vit",
        "backbone_kwargs": {"model_kwargs": {"img_size": 8, "patch_size": 4}},
        "projection_batch_norm": False,
    },
    "data": {"augment": "identity_views"},
}


def _launch_two(
    args: list[str], driver: Path, signal_at_step: int = 0
) -> subprocess.CompletedProcess:
    return launch_two_processes(
        driver, args, CK_TEST_SIGNAL_AT_STEP=str(signal_at_step), CK_TEST_SIGNAL_RANK="0"
    )


def _losses(run_dir: Path) -> list[float]:
    return [float(row["loss"]) for row in read_metrics(run_dir / "metrics.csv")]


@pytest.mark.parametrize(
    ("method", "signal_at_step"),
    [("simclr", 0), ("moco", 3)],
    ids=["simclr-global-negatives", "moco-shuffle-bn-queue-signal-resume"],
)
def test_two_processes_match_one(
    tmp_path: Path, toy_cifar_dir: Path, method: str, signal_at_step: int
) -> None:
    data = tiny_image_config(
        tmp_path / "unused", toy_cifar_dir, **BN_FREE, method={"name": method, "queue_size": 24},
        train={"epochs": 1, "knn_every": 0, "batch_size": 8},
    )  # fmt: skip
    config = write_yaml(tmp_path / "config.yaml", data)
    driver = tmp_path / "driver.py"
    # The signal reaches rank 0 only: both ranks must still agree to stop after the same step.
    driver.write_text(
        SIGNAL_DRIVER.replace("if stop_at:", "if stop_at and os.environ['RANK'] == '0':")
    )

    two = tmp_path / "two"
    args = ["--config", str(config), "--output-dir", str(two)]
    first = _launch_two(args, driver, signal_at_step)
    if signal_at_step:
        assert first.returncode == 0, first.stderr  # stopped by a signal, with a checkpoint
        assert "--resume latest" in first.stderr
        checkpoint = list_checkpoints(two)[-1]
        assert read_meta(checkpoint)["world_size"] == 2
        assert all((checkpoint / rank_state_file(r)).is_file() for r in (0, 1))
        assert len(_losses(two)) == read_meta(checkpoint)["step"] < 5
        second = _launch_two([*args, "--resume", "latest"], driver)
        assert second.returncode == 0, second.stderr
    else:
        assert first.returncode == 0, first.stderr

    one = tmp_path / "one"
    assert main(["--config", str(config), "--output-dir", str(one), "train.batch_size=16"]) == 0
    expected, got = _losses(one), _losses(two)
    assert len(expected) == len(got) == 5  # 80 images / global batch 16
    for step, (a, b) in enumerate(zip(expected, got), start=1):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6), (step, a, b)
