"""Stopping a run, through the real command in subprocesses: SIGTERM / SIGINT / SIGHUP checkpoint
and exit 0; SIGHUP is left alone under nohup; a second signal during the save waits for it; the
`accelerate launch` launcher stopped or killed -9 leaves no orphan (the trainer notices, saves
and exits); a plain `python pretrain.py` outlives its parent; the run lock stops a second run
(exit 2, naming the PID) and a killed run's lock is taken over; resuming a finished run writes
nothing; the loop's own messages (progress bar label, a NaN before any checkpoint)."""

from __future__ import annotations

import contextlib
import json
import os
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
    tiny_tabular_config,
    toy_tabular,
    write_yaml,
)

from contrastkit.pipelines.checkpoint import list_checkpoints, read_meta, verify_checkpoint
from contrastkit.pipelines.config import config_from_dict
from contrastkit.pipelines.metrics import read_metrics
from contrastkit.pipelines.pretrain import PretrainTask, main
from contrastkit.pipelines.run_files import LOCK_FILE, METRICS_FILE
from contrastkit.pipelines.training.loop import run_training
from contrastkit.pipelines.training.run_lock import RunLock, RunLocked
from contrastkit.pipelines.training.stop import LAUNCHER_ENV, started_by_launcher
from contrastkit.pipelines.training.task import NonFiniteLossError

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="signals, /proc and flock as on Linux"
)

# 80 toy images / batch 16 = 5 steps per epoch. LONG: far more steps than a test waits for, so a
# signal sent after the first rows always lands mid-run.
STEPS_PER_EPOCH = 5
LONG = "train.epochs=200"
WAIT_S = 240  # a bound for a stuck run on a busy machine, never a timing assertion

# The pretrain command with signals sent from inside at exact points. CK_TEST_SIGNALS lists
# "STEP:NAME" (NAME to itself right after metrics.csv gets the row of STEP) and "save:NAME" (NAME
# during the next checkpoint save after those, between two of its files).
DRIVER = """
import os, signal, sys
import torch
from contrastkit.pipelines import metrics, pretrain
plan = [item.split(":") for item in os.environ.get("CK_TEST_SIGNALS", "").split(",") if item]
sent = []
log = metrics.MetricsLogger.log
def log_then_signal(self, row):
    log(self, row)
    for when, name in plan:
        if when.isdigit() and int(row["step"]) == int(when):
            sent.append(name)
            os.kill(os.getpid(), getattr(signal, name))
metrics.MetricsLogger.log = log_then_signal
save = torch.save
def save_then_signal(*args, **kwargs):
    save(*args, **kwargs)
    for when, name in plan:
        if when == "save" and sent and name not in sent[1:]:
            sent.append(name)
            os.kill(os.getpid(), getattr(signal, name))
torch.save = save_then_signal
sys.exit(pretrain.main(sys.argv[1:]))
"""


def _config(tmp_path: Path, toy_cifar_dir: Path) -> Path:
    raw = tiny_image_config(tmp_path / "unused", toy_cifar_dir, train={"knn_every": 0})
    return write_yaml(tmp_path / "config.yaml", raw)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
    return dict(env, PYTHONUNBUFFERED="1", **extra)


def _start(
    command: list[str], log: Path, *, hangup: int = signal.SIG_DFL, **env: str
) -> subprocess.Popen:
    """Start `command` in its own session (so it can be cleaned up as a group) with stdout and
    stderr in `log`, and SIGHUP's disposition set to `hangup` (SIG_IGN: as under nohup)."""
    with open(log, "w") as out:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGHUP, hangup),
        )


def _pretrain(config: Path, run_dir: Path, *more: str) -> list[str]:
    return [
        sys.executable, str(PRETRAIN_SCRIPT), "--config", str(config),
        "--output-dir", str(run_dir), *more,
    ]  # fmt: skip


def _driven(config: Path, run_dir: Path, *more: str) -> list[str]:
    """The pretrain command under DRIVER."""
    return [sys.executable, "-c", DRIVER, *_pretrain(config, run_dir, *more)[2:]]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / METRICS_FILE
    return read_metrics(path) if path.is_file() else []


def _wait_for_rows(run_dir: Path, count: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while len(_rows(run_dir)) < count:
        assert process.poll() is None, f"the run ended early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {count} metrics rows:\n{log.read_text()}"
        time.sleep(0.05)


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name: state, ppid, pgrp, session, ..."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rpartition(")")[2].split()


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")  # a zombie has exited


def _wait_until_gone(pid: int, log: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while _alive(pid):
        assert time.monotonic() < deadline, f"PID {pid} is still running:\n{log.read_text()}"
        time.sleep(0.05)


def _session(sid: int) -> list[int]:
    """The live processes of session `sid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[0] not in ("Z", "X") and int(stat[3]) == sid:
                found.append(int(entry.name))
    return found


def _end_session(sid: int) -> None:
    """Kill whatever a failed test left running in its session (the process group `sid`)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(sid, signal.SIGKILL)


def _assert_stopped_cleanly(run_dir: Path, err: str) -> int:
    """The checkpoint of the last logged step exists, the lock is gone, nothing raised; returns
    that step."""
    assert "Traceback" not in err, err
    assert f"--resume latest --output-dir {run_dir}" in err, err
    last_step = int(_rows(run_dir)[-1]["step"])
    assert 2 <= last_step < 200 * STEPS_PER_EPOCH
    checkpoint = list_checkpoints(run_dir)[-1]
    assert read_meta(checkpoint)["step"] == last_step, (checkpoint, last_step)
    assert verify_checkpoint(checkpoint) == []  # every file as meta.json recorded it
    assert not (run_dir / LOCK_FILE).exists()
    return last_step


# ---------------------------------------------------------------- a plain process


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name
)
def test_signal_saves_a_checkpoint_and_exits_zero(
    tmp_path: Path, toy_cifar_dir: Path, signum: signal.Signals
) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "log.txt"
    process = _start(_pretrain(_config(tmp_path, toy_cifar_dir), run_dir, LONG), log)
    try:
        _wait_for_rows(run_dir, 2, process, log)
        # While it runs, its lock names it.
        with pytest.raises(RunLocked, match=rf"\(PID {process.pid} on "):
            RunLock(run_dir).acquire()
        process.send_signal(signum)
        returncode = process.wait(timeout=WAIT_S)
    finally:
        _end_session(process.pid)
    err = log.read_text()
    assert f"{signum.name} received: finishing this step and saving a checkpoint" in err, err
    _assert_stopped_cleanly(run_dir, err)
    assert returncode == 0, err


def test_sighup_is_left_alone_under_nohup(tmp_path: Path, toy_cifar_dir: Path) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "log.txt"
    command = _driven(_config(tmp_path, toy_cifar_dir), run_dir, "train.epochs=1")
    process = _start(command, log, hangup=signal.SIG_IGN, CK_TEST_SIGNALS="2:SIGHUP")
    assert process.wait(timeout=WAIT_S) == 0, log.read_text()
    assert "SIGHUP" not in log.read_text()
    assert len(_rows(run_dir)) == STEPS_PER_EPOCH  # the whole run


def test_second_signal_during_the_save_waits_for_it(tmp_path: Path, toy_cifar_dir: Path) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "log.txt"
    command = _driven(_config(tmp_path, toy_cifar_dir), run_dir)
    process = _start(command, log, CK_TEST_SIGNALS="3:SIGTERM,save:SIGTERM")
    returncode = process.wait(timeout=WAIT_S)
    err = log.read_text()
    assert "SIGTERM received: finishing this step" in err
    assert "SIGTERM received: already stopping: saving the checkpoint, please wait" in err
    assert _assert_stopped_cleanly(run_dir, err) == 4  # the step running at the first signal
    assert returncode == 0, err


# ---------------------------------------------------------------- the launcher


def _launch(config: Path, run_dir: Path, log: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--num_cpu_threads_per_process", "1", *_pretrain(config, run_dir, LONG)[1:],
    ]  # fmt: skip
    return _start(command, log)


def _accelerate_forwards_sigterm() -> bool:
    """accelerate 1.16+'s single-process launcher terminates its child on SIGTERM (then kills it
    5 s later) and pipes the child's stderr through itself; earlier ones did neither."""
    from importlib.metadata import version

    from packaging.version import Version

    return Version(version("accelerate")) >= Version("1.16")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_stopping_the_launcher_stops_the_trainer(
    tmp_path: Path, toy_cifar_dir: Path, signum: signal.Signals
) -> None:
    """A SIGTERM or kill -9 to accelerate's single-process launcher: the trainer finishes its
    step, saves and exits, leaving nothing running, and says why on the launcher's output.
    Before accelerate 1.16 the launcher forwards nothing and the trainer sees it exit; 1.16+
    forwards SIGTERM itself, and after a kill -9 the trainer's stderr pipe through the dead
    launcher is broken: its messages go to stdout instead."""
    config, run_dir, log = _config(tmp_path, toy_cifar_dir), tmp_path / "run", tmp_path / "log"
    launcher = _launch(config, run_dir, log)
    try:
        _wait_for_rows(run_dir, 2, launcher, log)
        trainer = json.loads((run_dir / LOCK_FILE).read_text())["pid"]
        assert int(_proc_stat(trainer)[1]) == launcher.pid  # the launcher's child
        launcher.send_signal(signum)
        launcher.wait(timeout=WAIT_S)
        _wait_until_gone(trainer, log)
        assert _session(launcher.pid) == []  # no orphan left
    finally:
        _end_session(launcher.pid)
    err = log.read_text()
    if signum == signal.SIGTERM and _accelerate_forwards_sigterm():
        assert "SIGTERM received: finishing this step and saving a checkpoint" in err, err
    else:
        assert f"the launcher (PID {launcher.pid}) exited: finishing this step and saving" in err
    _assert_stopped_cleanly(run_dir, err)
    if signum == signal.SIGKILL:  # and the checkpoint resumes: finish its epoch
        epochs = read_meta(list_checkpoints(run_dir)[-1])["epoch"] + 1
        args = ["--config", str(config), "--output-dir", str(run_dir), "--resume", "latest"]
        resumed = run_pretrain_cli([*args, f"train.epochs={epochs}"])
        assert resumed.returncode == 0, resumed.stderr
        rows = _rows(run_dir)
        assert [int(r["step"]) for r in rows] == list(range(1, epochs * STEPS_PER_EPOCH + 1))


def test_plain_python_outlives_its_parent(tmp_path: Path, toy_cifar_dir: Path) -> None:
    """No launcher: the parent is a shell that may exit (nohup ... &); the run must go on."""
    run_dir, log = tmp_path / "run", tmp_path / "log.txt"
    command = _pretrain(_config(tmp_path, toy_cifar_dir), run_dir, "train.epochs=2")
    # A parent that starts the run, waits for its first row, then exits.
    parent_code = (
        "import subprocess, sys, time, pathlib\n"
        f"child = subprocess.Popen({command!r}, stdout=open({str(log)!r}, 'w'), "
        "stderr=subprocess.STDOUT)\n"
        f"metrics = pathlib.Path({str(run_dir / METRICS_FILE)!r})\n"
        "while not (metrics.is_file() and len(metrics.read_text().splitlines()) > 1):\n"
        "    if child.poll() is not None: sys.exit(1)\n"
        "    time.sleep(0.05)\n"
        "print(child.pid)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = parent.communicate(timeout=WAIT_S)
        assert parent.returncode == 0, log.read_text()
        _wait_until_gone(int(out), log)
    finally:
        _end_session(parent.pid)
    err = log.read_text()
    assert "launcher" not in err and "Traceback" not in err, err
    assert len(_rows(run_dir)) == 2 * STEPS_PER_EPOCH  # it ran to the end


REROUTE = """
import os, sys
from contrastkit.pipelines.training.stop import reroute_orphaned_stderr
read, write = os.pipe()
os.dup2(write, 2)
os.close(write)
print("alive reader:", reroute_orphaned_stderr(), flush=True)
os.close(read)  # the launcher that read our stderr is gone
print("no reader:", reroute_orphaned_stderr(), flush=True)
print("on stderr after the reroute", file=sys.stderr, flush=True)
"""


def test_stderr_is_rerouted_to_stdout_only_when_its_reader_is_gone(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    with open(out, "w") as stdout:
        subprocess.run(
            [sys.executable, "-c", REROUTE], stdout=stdout, env=_env(), check=True, timeout=60
        )
    assert out.read_text().splitlines() == [
        "alive reader: False",
        "no reader: True",
        "on stderr after the reroute",
    ]
    # A stdout that is itself a broken pipe is no better: nothing is rerouted.
    result = tmp_path / "result.txt"
    code = (
        "import os\n"
        "from contrastkit.pipelines.training.stop import reroute_orphaned_stderr\n"
        "read, write = os.pipe()\nos.dup2(write, 1)\nos.dup2(write, 2)\n"
        "os.close(write)\nos.close(read)\n"
        f"open({str(result)!r}, 'w').write(str(reroute_orphaned_stderr()))\n"
    )
    subprocess.run([sys.executable, "-c", code], env=_env(), check=True, timeout=60)
    assert result.read_text() == "False"


def test_started_by_launcher_reads_the_launchers_variables() -> None:
    assert not started_by_launcher({"PATH": "/bin"})
    assert started_by_launcher({"ACCELERATE_USE_CPU": "False"})  # set by accelerate, even unused
    assert started_by_launcher({"TORCHELASTIC_RUN_ID": "none"})


# ---------------------------------------------------------------- the lock and the run's end


def test_second_run_into_a_locked_dir_exits_2_naming_the_pid(
    tmp_path: Path, toy_cifar_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with RunLock(run_dir):
        before = (run_dir / LOCK_FILE).read_bytes()
        done = run_pretrain_cli(
            ["--config", str(_config(tmp_path, toy_cifar_dir)), "--output-dir", str(run_dir)]
        )
        assert [p.name for p in run_dir.iterdir()] == [LOCK_FILE]  # nothing written
        assert (run_dir / LOCK_FILE).read_bytes() == before
    assert done.returncode == 2, done.stderr
    pid = os.getpid()
    assert f"is in use by another run (PID {pid} on " in done.stderr
    assert f"wait for it or stop it (kill {pid})" in done.stderr
    assert "Traceback" not in done.stderr


def test_lock_of_a_killed_run_is_taken_over(tmp_path: Path, toy_cifar_dir: Path) -> None:
    config, run_dir, log = _config(tmp_path, toy_cifar_dir), tmp_path / "run", tmp_path / "log"
    process = _start(_pretrain(config, run_dir, LONG), log)
    try:
        _wait_for_rows(run_dir, 2, process, log)
        process.kill()
        process.wait(timeout=WAIT_S)
    finally:
        _end_session(process.pid)
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == process.pid  # left behind
    args = ["--config", str(config), "--output-dir", str(run_dir), "--resume", "latest"]
    done = run_pretrain_cli([*args, "train.epochs=2"])
    assert done.returncode == 0, done.stderr
    warning = [line for line in done.stderr.splitlines() if "taking over the lock" in line]
    assert len(warning) == 1 and f"PID {process.pid} on " in warning[0], done.stderr
    assert not (run_dir / LOCK_FILE).exists()


def test_resuming_a_finished_run_writes_nothing(tmp_path: Path, toy_cifar_dir: Path) -> None:
    run_dir = tmp_path / "run"
    raw = tiny_image_config(run_dir, toy_cifar_dir, train={"epochs": 1, "knn_every": 0})
    config = write_yaml(tmp_path / "config.yaml", raw)
    assert main(["--config", str(config)]) == 0

    def snapshot() -> dict[str, tuple[bytes, int]]:
        return {
            str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*"))
            if p.is_file()
        }

    before = snapshot()
    assert {"config.yaml", "metrics.csv", "checkpoint-5/meta.json"} <= set(before)
    done = run_pretrain_cli(["--config", str(config), "--resume", "latest"])
    assert done.returncode == 0, done.stderr
    assert "checkpoint-5: already finished at step 5 (epoch 1); nothing to do" in done.stderr
    assert snapshot() == before


class _LabelledTask(PretrainTask):
    def progress_label(self, config) -> str:
        return f"labelled {config.method.name} run"


def test_progress_bar_shows_the_tasks_label(tmp_path: Path, capsys) -> None:
    raw = tiny_tabular_config(tmp_path / "run", train={"epochs": 1, "progress_bar": True})
    config = config_from_dict(raw)
    assert PretrainTask().progress_label(config) == "pretrain simclr"  # the default
    run_training(config, _LabelledTask(), train_data=toy_tabular(128))
    assert "labelled simclr run" in capsys.readouterr().err


def test_nan_before_any_checkpoint_says_none_was_written(tmp_path: Path) -> None:
    data = toy_tabular(128)
    data.inputs[:] = float("nan")  # step 1 already goes NaN
    raw = tiny_tabular_config(tmp_path / "run")
    with pytest.raises(NonFiniteLossError, match=r"step 1; .*\(no checkpoint was written yet\)"):
        run_training(config_from_dict(raw), PretrainTask(), train_data=data)
    assert list_checkpoints(tmp_path / "run") == []
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released on the error too
