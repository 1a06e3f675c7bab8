"""The training commands' command line: config errors answered before torch is imported (checked in
a subprocess), options and overrides in any order, the exit status of each ending (done, stopped
by a signal, diverged, bad input) through the real command, and config.yaml's file mode."""

from __future__ import annotations

import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pretrain_helpers import (
    CONFIG_DIR,
    PRETRAIN_SCRIPT,
    REPO_ROOT,
    run_pretrain_cli,
    tiny_image_config,
    write_yaml,
)

from contrastkit.pipelines import entry_points
from contrastkit.pipelines.checkpoint import list_checkpoints, read_meta
from contrastkit.pipelines.config import config_to_dict, load_config, save_config
from contrastkit.pipelines.training import loop

JOINT_SCRIPT = PRETRAIN_SCRIPT.with_name("joint.py")
SMOKE = CONFIG_DIR / "smoke.yaml"
HEAVY = ("torch", "accelerate", "timm", "torchvision", "matplotlib", "sklearn")


def _script(script: Path, args: list[str], **env: str) -> subprocess.CompletedProcess:
    """The real script in a fresh interpreter, with -X importtime: stderr also lists every module
    the process imported (lines "import time: self | cumulative | name")."""
    return subprocess.run(
        [sys.executable, "-X", "importtime", str(script), *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _imported(stderr: str) -> set[str]:
    return {
        line.rsplit("|", 1)[1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def _messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith("import time:")]


# ------------------------------------------------------------------ before the heavy imports


@pytest.mark.parametrize(
    ("script", "overrides", "message"),
    [
        (PRETRAIN_SCRIPT, ["train.batchsize=8"], r"unknown key 'batchsize' in section 'train'.*Did you mean 'batch_size'"),
        (PRETRAIN_SCRIPT, ["optimizer.lr=-1"], r"optimizer\.lr must be > 0\.0, got -1"),
        (PRETRAIN_SCRIPT, ["method.name=simclr2"], r"method\.name must be one of \['barlow_twins', 'byol', 'dino', 'isd', 'moco', 'mocov3', 'nnclr', 'npair', 'simclr', 'simsiam', 'supcon', 'swav', 'vicreg'\], got 'simclr2' \(did you mean 'simclr'\?\)"),
        (PRETRAIN_SCRIPT, ["train.epochs=2", "train.warmup_epochs=5"], r"train\.warmup_epochs must be <= train\.epochs \(2\), got 5\.0; .*train\.epochs=2 train\.warmup_epochs=0\.2"),
        (JOINT_SCRIPT, ["joint.ssl_weight=-1"], r"joint\.ssl_weight must be >= 0\.0, got -1"),
    ],
)  # fmt: skip
def test_config_errors_are_answered_without_importing_torch(
    script: Path, overrides: list[str], message: str
) -> None:
    done = _script(script, ["--config", str(SMOKE), *overrides])
    command = "contrastkit-pretrain" if script == PRETRAIN_SCRIPT else "contrastkit-joint"
    assert done.returncode == 2, done.stderr[-2000:]
    lines = _messages(done.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"{command}: error: "), lines
    assert re.search(message, lines[0]), lines[0]
    loaded = sorted(_imported(done.stderr) & set(HEAVY))
    assert loaded == [], f"the config check imported {loaded}"
    assert "contrastkit.pipelines.config" in _imported(done.stderr)  # the reader sees imports


def test_a_config_that_passes_the_early_check_is_still_checked_whole(tmp_path: Path) -> None:
    # i-Mix support is a method's class attribute: checked after the registry (torch) loads.
    done = _script(PRETRAIN_SCRIPT, ["--config", str(SMOKE), "method.imix=mixup"])
    assert done.returncode == 2
    assert _messages(done.stderr) == [
        "contrastkit-pretrain: error: method.imix='mixup' is defined only for methods "
        "['byol', 'moco', 'mocov3', 'nnclr', 'npair', 'simsiam'] (i-Mix mixes the query of an in-batch or queue contrast), "
        "got method.name='simclr'; use method.imix=none"
    ]
    assert "torch" in _imported(done.stderr)


def test_help_describes_the_task_and_the_exit_status() -> None:
    done = subprocess.run(
        [sys.executable, str(PRETRAIN_SCRIPT), "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Self-supervised pretraining" in done.stdout  # the task's own description
    assert "--resume latest|PATH" in done.stdout
    assert "accelerate config default" in done.stdout
    for status in ("0  done, or stopped by SIGTERM", "1  the loss became NaN", "2  bad input"):
        assert status in done.stdout


# ------------------------------------------------------------------ parsing


def test_options_and_overrides_in_any_order(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [
        "train.epochs=1",
        "--config", str(SMOKE),
        "train.knn_every=0",
        "--output-dir", str(tmp_path / "run"),
        "optimizer.lr=0.1",
        "--print-config",
        "model.projection_dim=32",
    ]  # fmt: skip
    assert entry_points.pretrain_main(argv) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    overrides = [
        "train.epochs=1",
        "train.knn_every=0",
        f"train.output_dir={tmp_path / 'run'}",
        "optimizer.lr=0.1",
        "model.projection_dim=32",
    ]
    assert printed == config_to_dict(load_config(SMOKE, overrides))
    assert not (tmp_path / "run").exists()


def test_an_unknown_option_says_how_config_fields_are_set(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        entry_points.pretrain_main(["--config", str(SMOKE), "--epochs", "2"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "contrastkit-pretrain: error: unrecognized option '--epochs'; config fields are set as "
        "section.field=value (e.g. train.epochs=2), anywhere on the line"
    )


def test_a_stray_word_is_reported_as_a_malformed_override(capsys: pytest.CaptureFixture) -> None:
    argv = ["--config", str(SMOKE), "train.epochs=1", "--output-dir", "x", "epochs"]
    assert entry_points.pretrain_main(argv) == 2
    assert capsys.readouterr().err == (
        "contrastkit-pretrain: error: an override must look like section.field=value "
        "(e.g. optimizer.lr=0.3), got 'epochs'\n"
    )


def test_entry_points_name_their_tasks_as_the_tasks_do() -> None:
    for command in (entry_points.PRETRAIN, entry_points.JOINT):
        task = command.load_task()
        assert (task.command, task.config_class) == (command.command, command.config_class)


# ------------------------------------------------------------------ exit status


def test_a_signal_stop_exits_0_and_prints_the_command_that_continues(
    tmp_path: Path, toy_cifar_dir: Path
) -> None:
    run = tmp_path / "run"
    config = write_yaml(tmp_path / "c.yaml", tiny_image_config(run, toy_cifar_dir))
    old_umask = os.umask(0o022)  # the usual umask, inherited by the subprocesses
    try:
        stopped = run_pretrain_cli(["--config", str(config)], signal_at_step=3)
        assert stopped.returncode == 0, stopped.stderr[-3000:]
        match = re.search(
            r"contrastkit-pretrain: stopped by SIGTERM at step (\d+); .*", stopped.stderr
        )
        assert match, stopped.stderr[-3000:]
        step = int(match.group(1))
        checkpoint = list_checkpoints(run)[-1]
        assert read_meta(checkpoint)["step"] == step
        continue_with = re.search(r"continue with: (.*) \(launched as before\)", match.group(0))
        assert continue_with, match.group(0)
        command, *args = shlex.split(continue_with.group(1))
        assert command == "contrastkit-pretrain"
        assert args == ["--resume", "latest", "--output-dir", str(run)]

        resumed = subprocess.run(
            [sys.executable, str(PRETRAIN_SCRIPT), *args],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        os.umask(old_umask)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "contrastkit-pretrain: done, 10 steps" in resumed.stderr
    for config_file in (run / "config.yaml", checkpoint / "config.yaml"):
        assert stat.S_IMODE(config_file.stat().st_mode) == 0o644, config_file


def test_a_diverged_run_exits_1(tmp_path: Path, toy_cifar_dir: Path) -> None:
    run = tmp_path / "run"
    # A step of lr 1e38 makes every weight overflow: the loss (or the weights) turn non-finite.
    raw = tiny_image_config(run, toy_cifar_dir, optimizer={"lr": 1e38, "scale_lr": False})
    done = run_pretrain_cli(["--config", str(write_yaml(tmp_path / "c.yaml", raw))])
    assert done.returncode == 1, done.stderr[-3000:]
    assert "contrastkit-pretrain: stopped: " in done.stderr
    assert "Traceback" not in done.stderr


def test_an_output_dir_that_is_a_file_exits_2_naming_it(
    tmp_path: Path, toy_cifar_dir: Path
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    config = write_yaml(tmp_path / "c.yaml", tiny_image_config(taken, toy_cifar_dir))
    done = _script(PRETRAIN_SCRIPT, ["--config", str(config)])
    assert done.returncode == 2
    lines = [line for line in _messages(done.stderr) if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("contrastkit-pretrain: error: "), lines
    assert str(taken) in lines[0]
    assert taken.read_text() == "not a folder"


def test_an_os_error_during_the_run_is_one_line_naming_the_path(
    tmp_path: Path, toy_cifar_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # Whatever OSError escapes the run (here one the loop would raise writing metrics.csv) is
    # bad input, said in one line with its reason and path; never a traceback.
    def fail(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", "/runs/x/metrics.csv")

    monkeypatch.setattr(loop, "run_training", fail)
    config = write_yaml(tmp_path / "c.yaml", tiny_image_config(tmp_path / "run", toy_cifar_dir))
    assert entry_points.pretrain_main(["--config", str(config)]) == 2
    assert capsys.readouterr().err == (
        "contrastkit-pretrain: error: permission denied: '/runs/x/metrics.csv'\n"
    )


def test_a_missing_config_file_exits_2(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert entry_points.pretrain_main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err == (
        f"contrastkit-pretrain: error: config file {str(tmp_path / 'nope.yaml')!r} does not exist\n"
    )
    assert entry_points.pretrain_main(["--config", str(tmp_path)]) == 2
    assert "is a folder; give a YAML file" in capsys.readouterr().err


# ------------------------------------------------------------------ config.yaml's mode


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o644)])
def test_config_yaml_is_readable_by_all_under_the_usual_umask(
    tmp_path: Path, umask: int, mode: int
) -> None:
    old = os.umask(umask)
    try:
        path = save_config(load_config(SMOKE), tmp_path / "config.yaml")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert load_config(path) == load_config(SMOKE)


def test_ctrl_c_while_starting_is_one_line_and_writes_nothing(
    tmp_path: Path, toy_cifar_dir: Path
) -> None:
    # SIGINT one second in: the config is checked (~0.2 s) and torch is being imported (~4 s
    # here); the signal handlers of the run are not installed yet.
    run = tmp_path / "run"
    config = write_yaml(tmp_path / "c.yaml", tiny_image_config(run, toy_cifar_dir))
    process = subprocess.Popen(
        [sys.executable, str(PRETRAIN_SCRIPT), "--config", str(config)],
        cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # Ctrl-C reaches a command started from a terminal, where SIGINT is not ignored; a test
        # run started in the background by a shell inherits SIGINT ignored, and would pass that
        # on (the command then rightly leaves an ignored SIGINT ignored while it starts).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    if process.returncode == 130:  # interrupted before the run started, as intended
        assert re.match(
            r"contrastkit-pretrain: (SIGINT while starting|interrupted before training started)",
            last,
        ), stderr[-3000:]
        assert list_checkpoints(run) == []
        assert not (run / "config.yaml").exists()
    else:  # a slow start: the run's own handlers caught it, before or after a first step
        assert process.returncode == 0, stderr[-3000:]
        assert last.startswith("contrastkit-pretrain: stopped by SIGINT"), stderr[-3000:]
