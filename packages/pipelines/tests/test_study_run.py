"""`contrastkit-study run`: a tiny study (a pretrain cell and a joint cell, two seeds, three steps
each, toy CIFAR at 8x8) runs end to end, a run stopped by a signal continues without redoing
what finished, the wall-time estimate comes from timed steps, and bad input is one line, exit 2."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pretrain_helpers import CONFIG_DIR, REPO_ROOT

from contrastkit.pipelines import metrics
from contrastkit.pipelines.study import cli, estimate, evaluate, load_study, run_study, runner
from contrastkit.pipelines.study.cells_csv import CELL_COLUMNS

STUDY_SCRIPT = REPO_ROOT / "packages" / "pipelines" / "study.py"
TINY = [
    "data.image_size=8",
    "data.train_subset=48",  # 3 steps of 16
    "data.knn_test_subset=16",
    "train.epochs=1",
    "train.warmup_epochs=0",
    "train.batch_size=16",
    "train.knn_every=0",
    "train.log_every=1",
    "train.checkpoint_every=0",
    "train.progress_bar=false",
    "model.backbone=timm:test_resnet",
    "model.projection_hidden_dim=32",
    "model.projection_dim=16",
]
PROBE_ARGS = ["--epochs", "2", "--batch-size", "16", "--tsne-points", "40"]


def write_study(folder: Path, data_dir: Path, **changes: object) -> Path:
    """A study file `tiny.yaml` in `folder`: cell `simclr` (pretrain, probed) and cell `joint`
    (ISD + CE, validated by itself), profile cpu with seeds 0 and 1 on the toy CIFAR."""
    study = {
        "name": "tiny",
        "description": "A toy study for the tests.",
        "evaluation": {"probe": "linear", "probe_args": PROBE_ARGS, "pictures": True},
        "cells": {
            "simclr": {"config": str(CONFIG_DIR / "smoke.yaml")},
            "joint": {"config": str(CONFIG_DIR / "joint_smoke.yaml"), "task": "joint"},
        },
        "profiles": {
            "cpu": {
                "description": "toy scale",
                "seeds": [0, 1],
                "overrides": [f"data.data_dir={data_dir}", *TINY],
                "cell_overrides": {"joint": ["method.queue_size=64"]},
                "scale_downs": ["8x8 toy images, 2 steps"],
            }
        },
        "references": [
            {"cell": "simclr", "metric": "linear_top1", "value": 90.0, "source": "test, made up"}
        ],
    }
    study.update(changes)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def read_rows(output: Path) -> list[dict[str, str]]:
    with open(output / "cells.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == CELL_COLUMNS
        return list(reader)


def counting(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, object]]:
    """Record every training the runner starts: (run dir, resume)."""
    from contrastkit.pipelines import joint, pretrain

    calls: list[tuple[str, object]] = []
    for module, name in ((pretrain, "run_pretrain"), (joint, "run_joint")):
        real = getattr(module, name)

        def wrapped(config, *, resume=None, _real=real, **kwargs):  # type: ignore[no-untyped-def]
            calls.append((str(config.train.output_dir), resume))
            return _real(config, resume=resume, **kwargs)

        monkeypatch.setattr(module, name, wrapped)
    return calls


def test_a_stopped_study_continues_without_redoing_finished_runs(
    tmp_path: Path,
    toy_cifar_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    spec = load_study(write_study(tmp_path, toy_cifar_dir))
    output = tmp_path / "out"
    stopped_dir = output / "cells" / "simclr" / "seed1" / "pretrain"

    # A real SIGTERM while step 1 of (simclr, seed 1) is logged: the loop stops after the
    # next step (the stop is checked once per step, before the log) and saves it.
    original_log = metrics.MetricsLogger.log

    def log(self: metrics.MetricsLogger, row: dict) -> None:
        original_log(self, row)
        if self.run_dir == stopped_dir and int(row["step"]) == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(metrics.MetricsLogger, "log", log)
    first = counting(monkeypatch)
    run_study(spec, "cpu", output_dir=output, estimate=False)
    out = capsys.readouterr().out
    assert "continue with: python packages/pipelines/study.py run" in out
    assert f"--output-dir {output}" in out
    # One finished row; the stopped run left a checkpoint and no row; no report yet.
    rows = read_rows(output)
    assert [(r["cell"], r["seed"]) for r in rows] == [("simclr", "0")]
    assert (stopped_dir / "checkpoint-2").is_dir()
    assert not (output / "REPORT.md").exists()
    assert [d for d, _ in first] == [str(output / "cells/simclr/seed0/pretrain"), str(stopped_dir)]
    done_mtime = (output / "cells/simclr/seed0/pretrain/metrics.csv").stat().st_mtime_ns
    timing = output / "cells/simclr/seed1/timing.json"
    first_start_s = json.loads(timing.read_text())["pretrain_s"]

    # Continue: (simclr, 0) is skipped, (simclr, 1) resumes, the joint cell runs both seeds.
    monkeypatch.setattr(metrics.MetricsLogger, "log", original_log)
    second = counting(monkeypatch)
    run_study(spec, "cpu", output_dir=output, estimate=False)
    out = capsys.readouterr().out
    assert "seed 0 done: skipped" in out and "seed 1 resumes at step 2" in out
    assert second == [
        (str(stopped_dir), "latest"),
        (str(output / "cells/joint/seed0/pretrain"), None),
        (str(output / "cells/joint/seed1/pretrain"), None),
    ]
    assert (output / "cells/simclr/seed0/pretrain/metrics.csv").stat().st_mtime_ns == done_mtime
    steps = [r["step"] for r in metrics.read_metrics(stopped_dir / "metrics.csv")]
    assert steps == ["1", "2", "3"]  # resumed after step 2, not redone from the start
    # Its pretraining time adds both starts.
    resumed_s = json.loads(timing.read_text())["pretrain_s"]
    assert resumed_s > first_start_s > 0

    rows = read_rows(output)
    assert [(r["cell"], r["seed"]) for r in rows] == [
        ("simclr", "0"), ("simclr", "1"), ("joint", "0"), ("joint", "1"),
    ]  # fmt: skip
    assert float(rows[1]["pretrain_s"]) == pytest.approx(resumed_s, abs=1e-4)
    for row in rows:
        assert (row["study"], row["profile"], row["epochs"]) == ("tiny", "cpu", "1")
        assert row["backbone"] == "timm:test_resnet" and row["imix"] == "none"
        run_dir = output / row["run_dir"]
        assert (run_dir / "config.yaml").is_file()
        assert float(row["wall_s"]) == pytest.approx(
            float(row["pretrain_s"]) + float(row["probe_s"] or 0), abs=2e-4
        )
    simclr, joint = rows[:2], rows[2:]
    for row in simclr:
        # The numbers are the probe's own results row for this run and seed.
        probe = output / "cells" / "simclr" / f"seed{row['seed']}" / "probe"
        with open(probe / "results.csv", newline="") as handle:
            (probe_row,) = list(csv.DictReader(handle))
        assert probe_row["seed"] == row["seed"]
        for column in ("knn_top1", "linear_top1"):
            assert float(row[column]) == pytest.approx(float(probe_row[column]), abs=1e-4)
        assert (row["method"], row["task"], row["probe"]) == ("simclr", "pretrain", "linear")
        assert (row["label_fraction"], row["val_top1"]) == ("1.0", "")
        assert float(probe_row["probe_epochs"]) == 2
    # Pictures only for the cell's lowest seed, where the report takes them from.
    assert (output / "cells/simclr/seed0/probe/tsne.png").is_file()
    assert not (output / "cells/simclr/seed1/probe/tsne.png").exists()
    for row in joint:
        history = metrics.read_metrics(output / row["run_dir"] / "metrics.csv")
        final = [h["val_top1"] for h in history if h["val_top1"]][-1]
        assert row["linear_top1"] == row["val_top1"]
        assert float(row["val_top1"]) == pytest.approx(float(final), abs=1e-4)
        assert (row["method"], row["task"], row["probe"], row["probe_s"]) == (
            "isd", "joint", "", ""
        )  # fmt: skip

    # The report was written at the end, from these rows.
    report = (output / "REPORT.md").read_text()
    assert report.splitlines()[0].startswith("**CPU profile")
    linear = [float(r["linear_top1"]) for r in simclr]
    assert f"{statistics.mean(linear):.2f} ± {statistics.stdev(linear):.2f}" in report
    assert (output / "study.yaml").read_text() == spec.path.read_text()

    # A third run finds everything done and trains nothing.
    third = counting(monkeypatch)
    run_study(spec, "cpu", output_dir=output, estimate=False)
    assert third == [] and len(read_rows(output)) == 4
    assert "0 left" in capsys.readouterr().out

    # The folder belongs to this study file as it was, under this profile.
    edited = write_study(tmp_path, toy_cifar_dir, description="Edited since.")
    with pytest.raises(ValueError, match="another version of"):
        run_study(load_study(edited), "cpu", output_dir=output, estimate=False)
    other_spec = load_study(edited)
    with pytest.raises(
        ValueError, match="holds study 'tiny' with profile 'cpu', not 'tiny' with 'gpu'"
    ):
        run_study(
            dataclasses.replace(other_spec, profiles={"gpu": other_spec.profiles["cpu"]}),
            "gpu", output_dir=output, estimate=False,
        )  # fmt: skip


def test_the_estimate_times_steps_and_a_finished_pretraining_is_only_probed(
    tmp_path: Path,
    toy_cifar_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    spec = load_study(write_study(tmp_path, toy_cifar_dir))
    output = tmp_path / "out"
    # The pretraining of (simclr, 0) finished, but the study stopped before its probe.
    folder = output / "cells" / "simclr" / "seed0" / "pretrain"
    from contrastkit.pipelines.pretrain import run_pretrain

    run_pretrain(spec.resolved_config("simclr", "cpu", 0, folder))
    timed: list[float] = []
    real_time = estimate.time_config

    def time_config(config, task):  # type: ignore[no-untyped-def]
        timing = real_time(config, task)
        timed.append(timing.seconds_per_step)
        assert timing.steps_per_epoch == 3  # data.train_subset=48 / batch 16
        return timing

    logged: list[list[dict[str, str]]] = []
    real_seconds = estimate._seconds_per_step

    def seconds_per_step(rows):  # type: ignore[no-untyped-def]
        logged.append(list(rows))
        return real_seconds(rows)

    monkeypatch.setattr(estimate, "time_config", time_config)
    monkeypatch.setattr(estimate, "_seconds_per_step", seconds_per_step)
    calls = counting(monkeypatch)
    run_study(spec, "cpu", cells=["simclr"], seeds=[0], output_dir=output)
    out = capsys.readouterr().out
    # Timed once: 4 throw-away steps in a temporary folder (the run dir gains nothing).
    assert len(timed) == 1 and timed[0] > 0
    ((rows,),) = [logged]
    elapsed = {int(r["step"]): float(r["elapsed_s"]) for r in rows}
    assert sorted(elapsed) == [1, 2, 3, 4]
    assert timed[0] == pytest.approx((elapsed[4] - elapsed[2]) / 2)
    assert "estimated wall time" in out and "s/step" in out and "total: about" in out
    # The only training started is the throw-away one, in a folder removed since.
    ((throwaway, _),) = calls
    assert not throwaway.startswith(str(output)) and not Path(throwaway).exists()
    assert "seed 0 pretrained, evaluation left" in out
    assert [(r["cell"], r["seed"]) for r in read_rows(output)] == [("simclr", "0")]
    # The row's time is the pretraining's metrics.csv clock (it ran outside the study).
    last = metrics.read_metrics(folder / "metrics.csv")[-1]
    assert float(read_rows(output)[0]["pretrain_s"]) == pytest.approx(float(last["elapsed_s"]))


def test_seconds_per_step_is_between_steps_two_and_four() -> None:
    rows = [
        {"step": str(s), "elapsed_s": str(e)} for s, e in [(1, 5.0), (2, 6.0), (3, 7.5), (4, 9.0)]
    ]
    assert estimate._seconds_per_step(rows) == pytest.approx((9.0 - 6.0) / 2)
    assert estimate._seconds_per_step(rows[:2]) == pytest.approx(6.0 / 2)  # too few: all of it


def test_a_tabular_pretrain_cell_without_held_out_rows_is_refused_before_running(
    tmp_path: Path, toy_cifar_dir: Path
) -> None:
    path = write_study(
        tmp_path,
        toy_cifar_dir,
        cells={"moco": {"config": str(CONFIG_DIR / "imix_moco_covtype.yaml")}},
        profiles={"cpu": {"seeds": [0], "scale_downs": ["none really"]}},
        references=[],
        evaluation={"probe": "linear"},
    )
    spec = load_study(path)
    with pytest.raises(ValueError, match=r"cell 'moco'.*val_start"):
        run_study(spec, "cpu", output_dir=tmp_path / "out", estimate=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no_such_study"], "no study named 'no_such_study'"),
        (["run", "{study}", "--cells", "simclr,nope"], "unknown cell of study 'tiny' 'nope'"),
        (["run", "{study}", "--seeds", "0,x"], "comma-separated ints"),
        (["run", "{study}", "--profile", "gpu"], "unknown profile of study 'tiny' 'gpu'"),
        (["run", "{study}", "--profile", "tpu"], "invalid choice: 'tpu'"),
        (["report", "{tmp}/nothing"], "run.json does not exist"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str],
    message: str,
    tmp_path: Path,
    toy_cifar_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    study = write_study(tmp_path, toy_cifar_dir)
    argv = [a.format(study=study, tmp=tmp_path) for a in args]
    try:
        status = cli.main(argv)
    except SystemExit as leaving:  # argparse's usage errors
        status = leaving.code
    assert status == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("contrastkit-study: error: ") and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]  # nothing written


def test_the_script_lists_the_studies_and_fails_in_one_line(tmp_path: Path) -> None:
    listed = subprocess.run(
        [sys.executable, str(STUDY_SCRIPT), "list"], capture_output=True, text=True, timeout=300
    )
    assert listed.returncode == 0, listed.stderr
    shipped = sorted(p.stem for p in runner.STUDIES_DIR.glob("*.yaml"))
    for name in shipped:
        assert f"python packages/pipelines/study.py run {name} --profile cpu" in listed.stdout
    bad = subprocess.run(
        [sys.executable, str(STUDY_SCRIPT), "run", str(tmp_path / "none.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"contrastkit-study: error: study file {str(tmp_path / 'none.yaml')!r} does not exist"
    ]
    assert list(tmp_path.iterdir()) == []


def test_probe_values_use_the_study_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe's command line: the study's options, probe_args, then the kNN-only head.
    seen: list[object] = []

    def fake_run_probe(args):  # type: ignore[no-untyped-def]
        seen.append(args)
        from contrastkit.pipelines.probe import ProbeOutcome

        return ProbeOutcome({"knn_top1": 55.0, "linear_top1": 61.0}, tmp_path)

    from contrastkit.pipelines import probe

    monkeypatch.setattr(probe, "run_probe", fake_run_probe)
    from contrastkit.pipelines.study.spec import Evaluation

    knn = Evaluation("knn", 0.1, ("--epochs", "50"), False)
    values = evaluate.probe_values(knn, tmp_path, 3, pictures=False)
    args = seen[-1]
    assert (args.epochs, args.seed, args.label_fraction, args.no_tsne) == (1, 3, 0.1, True)
    assert values["linear_top1"] is None and values["knn_top1"] == 55.0
    finetune = Evaluation("finetune", 1.0, ("--epochs", "5"), True)
    values = evaluate.probe_values(finetune, tmp_path, 0, pictures=True)
    args = seen[-1]
    assert (args.finetune, args.epochs, args.no_tsne, args.no_nn_grid) == (True, 5, False, False)
    assert args.checkpoint == str(tmp_path / "pretrain") and values["linear_top1"] == 61.0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_during_a_probe_ends_with_the_command_that_continues(
    tmp_path: Path,
    toy_cifar_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    signum: signal.Signals,
) -> None:
    """Outside a training (here: in the probe) SIGTERM / SIGHUP stop the study like Ctrl-C: exit
    130, the command that continues it, no row for the pair; the handlers are put back after,
    and the next run probes the finished pretraining again without training it."""
    study = write_study(tmp_path, toy_cifar_dir)
    output = tmp_path / "out"
    real_probe = runner.probe_values
    probes: list[int] = []

    def probe_then_signal(*args, **kwargs):  # type: ignore[no-untyped-def]
        probes.append(1)
        if len(probes) == 1:
            os.kill(os.getpid(), signum)  # a real signal, in the middle of the probe
        return real_probe(*args, **kwargs)

    monkeypatch.setattr(runner, "probe_values", probe_then_signal)
    # Under nohup SIGHUP is ignored, and the study then leaves it so: not this test's case.
    ignored = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        _signal_then_continue(study, output, monkeypatch, capsys, signum, probes)
    finally:
        signal.signal(signal.SIGHUP, ignored)


def _signal_then_continue(
    study: Path,
    output: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    signum: signal.Signals,
    probes: list[int],
) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    args = ["run", str(study), "--cells", "simclr", "--seeds", "0", "--output-dir", str(output),
            "--no-estimate"]  # fmt: skip
    assert cli.main(args) == cli.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert f"interrupted by {signum.name}; continue with: " in err
    assert "--cells simclr --seeds 0" in err.splitlines()[-1]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)) == before
    assert not (output / "cells.csv").exists() or read_rows(output) == []

    calls = counting(monkeypatch)
    assert cli.main(args) == cli.EXIT_OK
    assert calls == []  # the pretraining had finished: only probed again
    assert len(probes) == 2
    assert [(r["cell"], r["seed"]) for r in read_rows(output)] == [("simclr", "0")]
