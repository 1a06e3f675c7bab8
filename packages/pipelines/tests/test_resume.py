"""Exact resume: a run stopped by a real signal mid-epoch and resumed logs the same bits per step as a
run that was never interrupted (model, teacher, queue, optimizer, schedule, RNG and data position);
a damaged newest checkpoint is skipped (and said why) for the newest intact one, through the real
command."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pretrain_helpers import (
    PRETRAIN_SCRIPT,
    REPO_ROOT,
    flip_byte,
    launch_two_processes,
    run_pretrain_cli,
    tiny_image_config,
    truncate_file,
    write_yaml,
)

from contrastkit.pipelines.checkpoint import list_checkpoints, read_meta, verify_checkpoint
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
    assert stopped.returncode == 0, stopped.stderr  # stopped by a signal, with a checkpoint
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
    the process exits 0 and says how to resume."""
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
    assert process.returncode == 0, stderr  # stopped by a signal, with a checkpoint
    assert "--resume latest" in stderr
    last_step = int(read_metrics(metrics)[-1]["step"])
    assert 2 <= last_step < 250
    assert read_meta(list_checkpoints(run_dir)[-1])["step"] == last_step


# ---------------------------------------------------------------- damaged checkpoints, real command


@pytest.fixture(scope="module")
def finished_run(
    tmp_path_factory: pytest.TempPathFactory, toy_cifar_dir: Path
) -> tuple[Path, Path]:
    """(config, run dir) of a finished 2-epoch toy run: checkpoint-5 and checkpoint-10."""
    root = tmp_path_factory.mktemp("finished")
    data = tiny_image_config(root / "unused", toy_cifar_dir, train={"knn_every": 0})
    config = write_yaml(root / "simclr.yaml", data)
    run = root / "run"
    assert main(["--config", str(config), "--output-dir", str(run)]) == 0
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-5", "checkpoint-10"]
    return config, run


DAMAGE = {
    "truncated training_state.pt": ("training_state.pt", lambda p: truncate_file(p, 1234)),
    "empty rank_state-0.pt": ("rank_state-0.pt", lambda p: truncate_file(p, 0)),
    "flipped byte in backbone.pt": ("backbone.pt", lambda p: flip_byte(p, 100)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_latest_continues_from_the_newest_intact_checkpoint(
    tmp_path: Path, finished_run: tuple[Path, Path], damage: str
) -> None:
    config, finished = finished_run
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    name, damage_file = DAMAGE[damage]
    damaged = run / "checkpoint-10" / name
    recorded = read_meta(damaged.parent)["files"][name]["bytes"]
    damage_file(damaged)
    damaged_bytes = damaged.read_bytes()

    done = run_pretrain_cli(
        ["--config", str(config), "--output-dir", str(run), "--resume", "latest"]
    )
    assert done.returncode == 0, done.stderr
    if name == "backbone.pt":
        why = "backbone.pt does not match its SHA-256 in meta.json (damaged or changed)"
    else:
        why = f"{name} is {len(damaged_bytes)} bytes, meta.json says {recorded}"
    assert f"--resume latest: checkpoint-10 skipped: {why}" in done.stderr
    assert f"resuming from checkpoint-5 (epoch 1, batch 0) in {str(run)!r}" in done.stderr
    assert "Traceback" not in done.stderr
    # Continued from step 5: the steps after it are the finished run's, bit for bit.
    assert _log(run) == _log(finished)
    assert verify_checkpoint(run / "checkpoint-10") == []
    # The damaged folder was moved aside when step 10 was saved again, never deleted.
    assert (run / "checkpoint-10.corrupt" / name).read_bytes() == damaged_bytes
    assert "moved checkpoint-10 aside to checkpoint-10.corrupt" in done.stderr


def test_resume_path_to_a_damaged_checkpoint_exits_2_naming_the_file(
    tmp_path: Path, finished_run: tuple[Path, Path]
) -> None:
    config, finished = finished_run
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    checkpoint = run / "checkpoint-10"
    recorded = read_meta(checkpoint)["files"]["training_state.pt"]["bytes"]
    truncate_file(checkpoint / "training_state.pt", 1234)
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}

    args = ["--config", str(config), "--output-dir", str(run), "--resume", str(checkpoint)]
    done = run_pretrain_cli(args)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, done.stderr
    assert (
        f"cannot resume from {str(checkpoint)!r}: training_state.pt is 1234 bytes, "
        f"meta.json says {recorded}" in lines[0]
    )
    assert "Traceback" not in done.stderr
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before


def test_unreadable_file_of_an_unverified_checkpoint_is_an_error_naming_it(
    tmp_path: Path, finished_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint written before 0.2 (no "files" in meta.json) is not verified; its empty
    rank_state-0.pt is still one error line naming the file (exit 2), not an EOFError."""
    config, finished = finished_run
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    for step in (5, 10):
        meta_file = run / f"checkpoint-{step}" / "meta.json"
        meta = json.loads(meta_file.read_text())
        del meta["files"]
        meta_file.write_text(json.dumps(meta))
    truncate_file(run / "checkpoint-10" / "rank_state-0.pt", 0)
    args = ["--config", str(config), "--output-dir", str(run), "--resume", "latest"]
    assert main([*args, "train.epochs=3"]) == 2
    err = capsys.readouterr().err
    rank_file = run / "checkpoint-10" / "rank_state-0.pt"
    assert f"checkpoint file {str(rank_file)!r} cannot be read: it is empty (0 bytes)" in err
    assert "Traceback" not in err


def _launch_two(args: list[str]) -> subprocess.CompletedProcess:
    """The pretrain script on two CPU processes (gloo), as test_distributed launches it."""
    return launch_two_processes(PRETRAIN_SCRIPT, args)


def test_two_processes_record_every_rank_file_and_skip_a_damaged_one(
    tmp_path: Path, toy_cifar_dir: Path
) -> None:
    """meta.json lists both processes' rank_state files (hashed by the main process after the
    barrier); with one of them damaged, both processes resume from the same earlier checkpoint
    and the note is said once."""
    data = tiny_image_config(
        tmp_path / "unused", toy_cifar_dir,
        train={"epochs": 1, "batch_size": 8, "knn_every": 0, "checkpoint_every": 2},
    )  # fmt: skip
    config = write_yaml(tmp_path / "config.yaml", data)
    run = tmp_path / "run"
    args = ["--config", str(config), "--output-dir", str(run)]
    first = _launch_two(args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert [p.name for p in list_checkpoints(run)] == [
        "checkpoint-2",
        "checkpoint-4",
        "checkpoint-5",
    ]  # 80 images / global batch 16
    files = read_meta(run / "checkpoint-5")["files"]
    for rank in (0, 1):
        path = run / "checkpoint-5" / f"rank_state-{rank}.pt"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert files[path.name] == {"bytes": path.stat().st_size, "sha256": digest}
    log = _log(run)

    truncate_file(run / "checkpoint-5" / "rank_state-1.pt", 0)
    second = _launch_two([*args, "--resume", "latest"])
    assert second.returncode == 0, second.stderr[-3000:]
    skipped = "--resume latest: checkpoint-5 skipped: rank_state-1.pt is 0 bytes, meta.json says"
    assert second.stderr.count(skipped) == 1
    assert second.stderr.count("resuming from checkpoint-4 (epoch 0, batch 4)") == 1
    assert verify_checkpoint(run / "checkpoint-5") == []
    assert (run / "checkpoint-5.corrupt" / "rank_state-1.pt").stat().st_size == 0
    resumed = _log(run)
    assert [row[0] for row in resumed] == [row[0] for row in log]  # steps 1..5, once each
    for before, after in zip(log, resumed, strict=True):
        assert math.isclose(float(before[2]), float(after[2]), rel_tol=1e-6), (before, after)
