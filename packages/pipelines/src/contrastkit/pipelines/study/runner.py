"""Run a study: every (cell, seed) of a profile pretrained (or trained jointly), probed, and
appended to cells.csv, then REPORT.md written (`python packages/pipelines/study.py run STUDY`).

A study continues where it stopped: a (cell, seed) with a row in cells.csv is skipped, an
interrupted pretraining resumes from its newest checkpoint (`resume="latest"`), and a finished
pretraining without a row is only probed again. A signal that stops a pretraining stops the
study, with the command that continues it.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from contrastkit.pipelines.atomic import write_text_atomic
from contrastkit.pipelines.checkpoint import latest_checkpoint
from contrastkit.pipelines.checkpoint_integrity import read_meta
from contrastkit.pipelines.config import JointTrainingConfig
from contrastkit.pipelines.metrics import read_metrics
from contrastkit.pipelines.preflight import check_writable_dir
from contrastkit.pipelines.run_files import METRICS_FILE
from contrastkit.pipelines.study.cells_csv import (
    CELLS_FILE,
    append_cell_row,
    done_pairs,
    read_cell_rows,
)
from contrastkit.pipelines.study.estimate import PendingRun, estimate_lines
from contrastkit.pipelines.study.evaluate import config_values, joint_values, probe_values
from contrastkit.pipelines.study.report import (
    PRETRAIN_DIR,
    RUN_FILE,
    seed_dir,
    write_report,
)
from contrastkit.pipelines.study.sections import Evaluation
from contrastkit.pipelines.study.spec import STUDIES_DIR, STUDY_COPY_NAME, StudySpec

SCRIPT = "python packages/pipelines/study.py"
DEFAULT_OUTPUT_ROOT = Path("runs") / "studies"
TIMING_FILE = "timing.json"  # seed<k>/timing.json: pretraining seconds summed over every start


@dataclass(frozen=True)
class StudyRun:
    """One invocation of `run`: the study, the profile, the cells and seeds asked for, where."""

    spec: StudySpec
    profile: str
    cells: tuple[str, ...]
    seeds: tuple[int, ...]
    output_dir: Path
    command: str


def default_output_dir(spec: StudySpec, profile: str) -> Path:
    """`runs/studies/<study>_<profile>` (relative to the working directory)."""
    return DEFAULT_OUTPUT_ROOT / f"{spec.name}_{profile}"


def study_command(
    spec: StudySpec,
    profile: str,
    *,
    cells: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    output_dir: str | Path | None = None,
) -> str:
    """The `study.py run` command line that runs (or continues) exactly this: the study by name
    when it is a shipped one, else by its path."""
    shipped = spec.path == (STUDIES_DIR / f"{spec.name}.yaml").resolve()
    parts = [*shlex.split(SCRIPT), "run", spec.name if shipped else str(spec.path)]
    parts += ["--profile", profile]
    if cells is not None:
        parts += ["--cells", ",".join(cells)]
    if seeds is not None:
        parts += ["--seeds", ",".join(str(s) for s in seeds)]
    if output_dir is not None:
        parts += ["--output-dir", str(output_dir)]
    return shlex.join(parts)


def run_study(
    spec: StudySpec,
    profile: str,
    *,
    cells: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    output_dir: str | Path | None = None,
    estimate: bool = True,
) -> Path:
    """Run `profile` of `spec` for `cells` (default: every cell, study order) x `seeds` (default:
    the profile's) into `output_dir` (default `runs/studies/<study>_<profile>`), then write the
    report; returns the output folder. A pretraining stopped by a signal stops the study (no
    report; the command that continues it is printed).

    Raises ValueError naming the bad profile, cell or seed, or an output folder that holds another
    study's run; the training errors of `run_pretrain` / `run_joint` (NonFiniteLossError) pass on.
    """
    run = _study_run(spec, profile, cells, seeds, output_dir)
    _start_output(run)
    rows = read_cell_rows(run.output_dir / CELLS_FILE)
    done = done_pairs(rows)
    pending = [_pending(run, cell, seed) for cell in run.cells for seed in run.seeds
               if (cell, seed) not in done]  # fmt: skip
    _print_plan(run, done, pending)
    if estimate and pending:
        evaluation = spec.evaluation_for(run.profile)
        for line in estimate_lines(pending, evaluation.probe, _probe_epochs(evaluation)):
            print(line, flush=True)
    for pair in pending:
        if not _run_pair(run, pair):
            print(f"continue with: {run.command}", flush=True)
            return run.output_dir
    report = write_report(run.output_dir)
    print(f"study {spec.name} ({profile}): done; report {report}", flush=True)
    return run.output_dir


# ----------------------------------------------------------------------------------------------
# The plan: what is asked, what is done, the output folder


def _study_run(
    spec: StudySpec,
    profile: str,
    cells: Sequence[str] | None,
    seeds: Sequence[int] | None,
    output_dir: str | Path | None,
) -> StudyRun:
    """Check the request against the study and resolve its defaults."""
    profile_spec = spec.profile(profile)  # ValueError naming the study's profiles
    if cells is not None:
        if not cells:
            raise ValueError(f"cells must name at least one cell of {list(spec.cells)}")
        for cell in cells:
            spec.cell(cell)  # ValueError listing the cells
        if len(set(cells)) != len(cells):
            raise ValueError(f"cells must be distinct, got {list(cells)}")
    if seeds is not None:
        bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
        if not seeds or bad or len(set(seeds)) != len(seeds):
            raise ValueError(
                f"seeds must be a non-empty list of distinct ints >= 0, got {list(seeds)}"
            )
    chosen_cells = tuple(cells) if cells is not None else tuple(spec.cells)
    chosen_seeds = tuple(seeds) if seeds is not None else profile_spec.seeds
    folder = Path(output_dir) if output_dir is not None else default_output_dir(spec, profile)
    command = study_command(spec, profile, cells=cells, seeds=seeds, output_dir=output_dir)
    for cell in chosen_cells:
        _check_evaluable(spec, cell, profile)
    return StudyRun(spec, profile, chosen_cells, chosen_seeds, folder, command)


def _check_evaluable(spec: StudySpec, cell: str, profile: str) -> None:
    """A pretrain cell on tabular data is probed on held-out rows, which its data must define:
    said before hours of pretraining, not after."""
    if spec.cell(cell).task != "pretrain":
        return
    config = spec.resolved_config(cell, profile, 0, "unused")
    options = config.data.tabular_options
    if config.data.dataset == "tabular" and not (
        options.get("val_start") is not None or options.get("val_fraction") is not None
    ):
        raise ValueError(
            f"study {spec.name!r}: cell {cell!r} ({profile} profile) pretrains on tabular data "
            "without held-out rows, so its probe has no test split; set "
            "data.tabular_options.val_start or data.tabular_options.val_fraction in the cell's "
            "overrides"
        )


def _start_output(run: StudyRun) -> None:
    """Create the output folder; copy the study file (`study.yaml`) and write `run.json`, or check
    that a folder already started holds this study, unchanged, under this profile."""
    folder = check_writable_dir(run.output_dir, "the study's output dir (--output-dir)")
    spec = run.spec
    study_text = spec.path.read_text(encoding="utf-8")
    copy, info_path = folder / STUDY_COPY_NAME, folder / RUN_FILE
    info: dict[str, Any] = {}
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if (info.get("study"), info.get("profile")) != (spec.name, run.profile):
            raise ValueError(
                f"output dir {str(folder)!r} holds study {info.get('study')!r} with profile "
                f"{info.get('profile')!r}, not {spec.name!r} with {run.profile!r}; choose "
                "another --output-dir"
            )
        if copy.is_file() and copy.read_text(encoding="utf-8") != study_text:
            raise ValueError(
                f"output dir {str(folder)!r} was started from another version of "
                f"{str(spec.path)!r} (its copy {str(copy)!r} differs); choose another "
                "--output-dir, or restore the study file"
            )
    cells = [c for c in spec.cells if c in run.cells or c in info.get("cells", [])]
    seeds = sorted({*run.seeds, *info.get("seeds", [])})
    info = {
        "study": spec.name,
        "profile": run.profile,
        "seeds": seeds,
        "cells": cells,
        "started": info.get("started") or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": run.command,
        "study_file": str(spec.path),
    }
    write_text_atomic(copy, study_text)
    write_text_atomic(info_path, json.dumps(info, indent=2) + "\n")


def _pending(run: StudyRun, cell: str, seed: int) -> PendingRun:
    """What is left of (cell, seed): a new run, a resume, or only the evaluation."""
    folder = seed_dir(run.output_dir, cell, seed) / PRETRAIN_DIR
    config = run.spec.resolved_config(cell, run.profile, seed, folder)
    task = run.spec.cell(cell).task
    checkpoint = latest_checkpoint(folder) if folder.is_dir() else None
    if checkpoint is None:
        return PendingRun(cell, seed, task, config, "new")
    meta = read_meta(checkpoint)
    if int(meta["epoch"]) >= config.train.epochs:
        return PendingRun(cell, seed, task, config, "evaluate", int(meta["step"]))
    return PendingRun(cell, seed, task, config, "resume", int(meta["step"]))


def _print_plan(run: StudyRun, done: set[tuple[str, int]], pending: Sequence[PendingRun]) -> None:
    asked = len(run.cells) * len(run.seeds)
    print(
        f"study {run.spec.name}, profile {run.profile}: {len(run.cells)} cell(s) x "
        f"{len(run.seeds)} seed(s) = {asked} run(s) in {run.output_dir}; "
        f"{asked - len(pending)} done, {len(pending)} left",
        flush=True,
    )
    states = {(p.cell, p.seed): p for p in pending}
    for cell in run.cells:
        parts = []
        for seed in run.seeds:
            pair = states.get((cell, seed))
            if pair is None:
                parts.append(f"seed {seed} done: skipped")
            elif pair.state == "resume":
                parts.append(f"seed {seed} resumes at step {pair.done_steps}")
            elif pair.state == "evaluate":
                parts.append(f"seed {seed} pretrained, evaluation left")
            else:
                parts.append(f"seed {seed} to run")
        print(f"  {cell} ({run.spec.cell(cell).task}): " + "; ".join(parts), flush=True)


def _probe_epochs(evaluation: Evaluation) -> int:
    """The probe's training epochs (probe_args' --epochs, else the mode's default)."""
    from contrastkit.pipelines import probe_cli

    args = probe_cli.build_parser().parse_args(["--checkpoint", "-", *evaluation.probe_args])
    mode = "finetune" if evaluation.probe == "finetune" else "linear"
    return args.epochs or probe_cli.DEFAULT_EPOCHS[mode]


# ----------------------------------------------------------------------------------------------
# One (cell, seed)


def _run_pair(run: StudyRun, pair: PendingRun) -> bool:
    """Train (or resume) and evaluate one (cell, seed), then append its row; False when a signal
    stopped the training (nothing is appended)."""
    folder = seed_dir(run.output_dir, pair.cell, pair.seed)
    print(f"--- {pair.cell} seed {pair.seed}: {pair.state}", flush=True)
    if pair.state != "evaluate":
        result = _train(pair, folder)
        if result.stopped_by is not None:
            print(
                f"study {run.spec.name}: {pair.cell} seed {pair.seed} stopped by "
                f"{result.stopped_by} at step {result.step}; its checkpoint is kept",
                flush=True,
            )
            return False
    config = run.spec.resolved_config(pair.cell, run.profile, pair.seed, folder / PRETRAIN_DIR)
    pretrain_s = _pretrain_seconds(folder)
    if pair.task == "joint":
        row = joint_values(folder / PRETRAIN_DIR)
        probe_s = None
    else:
        # Pictures only where the report looks for them: the probe of a cell's lowest seed.
        seeds = [int(r["seed"]) for r in read_cell_rows(run.output_dir / CELLS_FILE)
                 if r["cell"] == pair.cell]  # fmt: skip
        evaluation = run.spec.evaluation_for(run.profile)
        pictures = evaluation.pictures and all(s > pair.seed for s in seeds)
        start = time.perf_counter()
        row = probe_values(evaluation, folder, pair.seed, pictures=pictures)
        probe_s = time.perf_counter() - start
    row.update(config_values(config))
    row.update(
        study=run.spec.name,
        cell=pair.cell,
        seed=pair.seed,
        profile=run.profile,
        task=pair.task,
        pretrain_s=pretrain_s,
        probe_s=probe_s,
        wall_s=pretrain_s + (probe_s or 0.0),
        run_dir=(folder / PRETRAIN_DIR).relative_to(run.output_dir).as_posix(),
    )
    append_cell_row(run.output_dir / CELLS_FILE, row)
    linear = row["linear_top1"]
    print(
        f"--- {pair.cell} seed {pair.seed}: kNN top-1 {_shown(row['knn_top1'])}, linear top-1 "
        f"{_shown(linear)}, {row['wall_s']:.1f} s",
        flush=True,
    )
    return True


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} %"


def _train(pair: PendingRun, folder: Path) -> Any:
    """Run or resume the pretraining (joint training) of `pair`, adding its wall time to
    seed<k>/timing.json."""
    resume = "latest" if pair.state == "resume" else None
    # A new run's time is its own; a resumed one adds to the starts before it.
    before = 0.0 if pair.state == "new" else _pretrain_seconds(folder)
    start = time.perf_counter()
    try:
        if pair.task == "joint":
            from contrastkit.pipelines.joint import run_joint

            assert isinstance(pair.config, JointTrainingConfig)
            return run_joint(pair.config, resume=resume)
        from contrastkit.pipelines.pretrain import run_pretrain

        return run_pretrain(pair.config, resume=resume)
    finally:
        if (folder / PRETRAIN_DIR).is_dir():  # nothing was trained when the run never started
            total = before + time.perf_counter() - start
            write_text_atomic(folder / TIMING_FILE, json.dumps({"pretrain_s": total}) + "\n")


def _pretrain_seconds(folder: Path) -> float:
    """The pretraining wall time in seed<k>/timing.json; without the file (a run trained outside
    the study), the last elapsed_s of its metrics.csv (0 without one)."""
    path = folder / TIMING_FILE
    if path.is_file():
        return float(json.loads(path.read_text(encoding="utf-8"))["pretrain_s"])
    metrics_csv = folder / PRETRAIN_DIR / METRICS_FILE
    rows = read_metrics(metrics_csv) if metrics_csv.is_file() else []
    return float(rows[-1]["elapsed_s"]) if rows and rows[-1].get("elapsed_s") else 0.0
