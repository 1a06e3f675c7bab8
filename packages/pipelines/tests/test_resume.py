"""Exact resume: a run stopped by a real signal mid-epoch and resumed logs the same bits per step as a
run that was never interrupted (model, teacher, queue, optimizer, schedule, RNG and data position)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pretrain_helpers import (
    PRETRAIN_SCRIPT,
    REPO_ROOT,
    run_pretrain_cli,
    tiny_image_config,
    write_yaml,
)

from contrastkit.pipelines.checkpoint import list_checkpoints, read_meta
from contrastkit.pipelines.metrics import read_metrics
from contrastkit.pipelines.pretrain import main

# 80 toy images / batch 16 = 5 steps per epoch, 2 epochs = 10 steps; the signal lands after step 7
# (1.4 epochs), the run finishes that step's successor and checkpoints mid-epoch.
SIGNAL_STEP = 7
LOGGED = ("step", "epoch", "loss", "lr", "knn_top1", "knn_top5", "online_top1", "online_test_top1")

METHODS = {
    "simclr": {"method": {"name": "simclr"}},
    "moco": {"method": {"name": "moco", "queue_size": 48}},
    "isd": {"method": {"name": "isd", "queue_size": 48}},
}


def _config(tmp_path: Path, toy_cifar_dir: Path, method: str) -> Path:
    sections = METHODS[method]
    data = tiny_image_config(
        tmp_path / "unused", toy_cifar_dir, **sections, train={"online_linear": True}
    )
    return write_yaml(tmp_path / f"{method}.yaml", data)


def _log(run_dir: Path) -> list[tuple[str, ...]]:
    return [tuple(row[c] for c in LOGGED) for row in read_metrics(run_dir / "metrics.csv")]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_signal_then_resume_is_bit_identical(
    tmp_path: Path, toy_cifar_dir: Path, method: str
) -> None:
    config = _config(tmp_path, toy_cifar_dir, method)
    reference = tmp_path / "reference"
    assert main(["--config", str(config), "--output-dir", str(reference)]) == 0

    interrupted = tmp_path / "interrupted"
    args = ["--config", str(config), "--output-dir", str(interrupted)]
    stopped = run_pretrain_cli(args, signal_at_step=SIGNAL_STEP)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert "SIGTERM received" in stopped.stderr
    checkpoint = list_checkpoints(interrupted)[-1]
    meta = read_meta(checkpoint)
    assert meta["step"] == SIGNAL_STEP + 1  # the step running when the signal came, completed
    assert (meta["epoch"], meta["batch_in_epoch"]) == (1, 3)  # mid-epoch: 1.6 epochs
    assert len(_log(interrupted)) == SIGNAL_STEP + 1

    assert main([*args, "--resume", "latest"]) == 0  # resumed in this process
    expected = _log(reference)
    assert len(expected) == 10
    assert _log(interrupted) == expected
    assert read_meta(list_checkpoints(interrupted)[-1])["step"] == 10


def test_external_sigint_saves_and_exits(tmp_path: Path, toy_cifar_dir: Path) -> None:
    """A SIGINT from outside (Ctrl-C) during a long run: the current step ends, a checkpoint is saved,
    the process exits with 130 and says how to resume."""
    config = _config(tmp_path, toy_cifar_dir, "simclr")
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            str(PRETRAIN_SCRIPT),
            "--config",
            str(config),
            "--output-dir",
            str(run_dir),
            "train.epochs=50",
        ],
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = run_dir / "metrics.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, stderr
    assert "--resume latest" in stderr
    last_step = int(read_metrics(metrics)[-1]["step"])
    assert 2 <= last_step < 250
    assert read_meta(list_checkpoints(run_dir)[-1])["step"] == last_step
