"""The study report: REPORT.md of a study's output folder, written from its cells.csv, run.json and
the copy of the study file, with mean ± sample std over seeds beside the published numbers.

The tables are built here; report_plots.py draws the pictures (bars, curves) and copies the best
cell's t-SNE and nearest-neighbour grid. `python packages/pipelines/study.py report DIR` rewrites it.
"""

from __future__ import annotations

import json
import math
import shlex
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contrastkit.pipelines.atomic import write_text_atomic
from contrastkit.pipelines.study.cells_csv import CELLS_FILE, read_cell_rows
from contrastkit.pipelines.study.spec import STUDY_COPY_NAME, StudySpec, load_study

# ---------------------------------------------------------------------------------------------
# The output folder of a study run (the runner writes it, this module reads it)

RUN_FILE = "run.json"
STUDY_REPORT_FILE = "REPORT.md"
CELLS_DIR = "cells"
PRETRAIN_DIR = "pretrain"
PROBE_DIR = "probe"
# cells.csv columns that hold a number (or nothing: the value does not apply to that cell).
NUMBER_COLUMNS: tuple[str, ...] = (
    "epochs", "knn_top1", "linear_top1", "wall_s", "label_fraction", "val_top1", "pretrain_s",
    "probe_s",
)  # fmt: skip
CPU_FIRST_LINE = (
    "**CPU profile: scaled down to run on 2 CPU cores; these numbers are not comparable to the "
    "paper's.**"
)
_METRIC_NAMES = {"knn_top1": "kNN top-1", "linear_top1": "linear top-1", "val_top1": "val top-1"}


def seed_dir(output_dir: str | Path, cell: str, seed: int) -> Path:
    """`<output>/cells/<cell>/seed<seed>`: the folder of one (cell, seed), holding pretrain/ and probe/."""
    return Path(output_dir) / CELLS_DIR / cell / f"seed{seed}"


# ---------------------------------------------------------------------------------------------
# Reading cells.csv and run.json


def read_cells(output_dir: str | Path) -> list[dict[str, str]]:
    """The rows of `<output_dir>/cells.csv` in file order, each column -> its text ("" = does not
    apply), checked: the header is exactly CELL_COLUMNS, every row has one field per column and a
    seed that is an int >= 0 (`cells_csv.read_cell_rows`), a number or nothing in NUMBER_COLUMNS,
    and a (cell, seed) of its own.

    Raises:
        FileNotFoundError: no cells.csv (no (cell, seed) has finished yet).
        ValueError: naming the file and the line of the first thing that is wrong.
    """
    path = Path(output_dir) / CELLS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: no (cell, seed) of the study has finished")
    rows = read_cell_rows(path)
    seen: dict[tuple[str, int], int] = {}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        if not row["cell"]:
            raise ValueError(f"{path}: line {line}: the cell column is empty")
        for column in NUMBER_COLUMNS:
            text = row[column]
            try:
                ok = text == "" or math.isfinite(float(text))
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(
                    f"{path}: line {line}: column {column!r} must be a finite number or empty "
                    f"(does not apply), got {text!r}"
                )
        key = (row["cell"], int(row["seed"]))
        if key in seen:
            raise ValueError(
                f"{path}: line {line}: cell {key[0]!r} seed {key[1]} already has a row "
                f"(line {seen[key]}); each (cell, seed) has one"
            )
        seen[key] = line
    return rows


def read_run_json(output_dir: str | Path) -> dict[str, Any]:
    """`<output_dir>/run.json` (study, profile, seeds, cells, started, command, ...), checked to
    hold at least a study name and a profile."""
    path = Path(output_dir) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; expected a study output folder written by "
            "`python packages/pipelines/study.py run STUDY`"
        )
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    missing = [key for key in ("study", "profile") if not isinstance(run, dict) or key not in run]
    if missing:
        raise ValueError(f"{path} lacks {missing}; it holds study, profile, seeds, cells, command")
    return run


def load_study_copy(output_dir: str | Path, run: Mapping[str, Any]) -> StudySpec:
    """The StudySpec of the copy `<output_dir>/study.yaml`, checked as any study file except that
    its cells' config files are not opened (the report needs none, and a results folder moved
    elsewhere, e.g. docs/results/, has them no more); cell paths resolve from the original
    study file's folder (run.json's "study_file") when it is recorded."""
    copy = Path(output_dir) / STUDY_COPY_NAME
    if not copy.is_file():
        raise FileNotFoundError(f"{copy} does not exist; the runner copies the study file there")
    original = run.get("study_file")
    base = Path(str(original)).expanduser().absolute().parent if original else None
    return load_study(copy, base_dir=base, check_configs=False)


# ---------------------------------------------------------------------------------------------
# Statistics over seeds


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation with ddof=1) of `values`; None where undefined (no value;
    one value has a mean but no std)."""
    if not values:
        return None, None
    mean = statistics.mean(values)
    return mean, statistics.stdev(values) if len(values) >= 2 else None


def format_mean_std(values: Sequence[float], *, signed: bool = False) -> str:
    """ "m ± s" with 2 decimals ("m ± n/a" for one value, "not measured" for none)."""
    mean, std = mean_std(values)
    if mean is None:
        return "not measured"
    text = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return f"{text} ± {'n/a' if std is None else f'{std:.2f}'}"


def format_duration(seconds: float) -> str:
    """12.3 s, 4.5 min or 1.50 h."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


@dataclass
class CellResults:
    """One cell's rows of cells.csv (in seed order) and the seeds the run asked for."""

    cell: str
    task: str
    rows: list[dict[str, str]]
    expected_seeds: list[int]

    @property
    def seeds(self) -> list[int]:
        return [int(row["seed"]) for row in self.rows]

    @property
    def missing_seeds(self) -> list[int]:
        return [seed for seed in self.expected_seeds if seed not in self.seeds]

    def values(self, column: str) -> dict[int, float]:
        """seed -> value of `column`, for the rows where it applies."""
        return {int(r["seed"]): float(r[column]) for r in self.rows if r.get(column, "") != ""}

    def text(self, column: str) -> str:
        """The rows' distinct values of a text column, joined ("" when there is no row)."""
        return " / ".join(dict.fromkeys(row[column] for row in self.rows if row[column]))


def collect_cells(
    spec: StudySpec, rows: Iterable[dict[str, str]], seeds: Sequence[int], source: Path
) -> list[CellResults]:
    """Every cell of the study (study order) with its rows; a row naming a cell the study does
    not have is a ValueError naming `source` (cells.csv)."""
    cells = {
        name: CellResults(name, cell.task, [], list(seeds)) for name, cell in spec.cells.items()
    }
    for row in rows:
        if row["cell"] not in cells:
            raise ValueError(
                f"{source}: cell {row['cell']!r} is not a cell of study {spec.name!r} "
                f"(its cells: {list(cells)})"
            )
        cells[row["cell"]].rows.append(row)
    for results in cells.values():
        results.rows.sort(key=lambda row: int(row["seed"]))
        results.expected_seeds += [s for s in results.seeds if s not in results.expected_seeds]
    return list(cells.values())


def best_metric(cell: CellResults) -> str:
    """linear_top1 when the cell has it, else knn_top1 (a study whose probe is kNN only)."""
    return "linear_top1" if cell.values("linear_top1") else "knn_top1"


def best_cell(cells: Sequence[CellResults]) -> CellResults | None:
    """The pretrain cell with the highest mean linear top-1 (None when none has one); in a study
    where no pretrain cell has a linear top-1 (probe: knn), the highest mean kNN top-1."""
    pretrain = [cell for cell in cells if cell.task != "joint"]
    for metric in ("linear_top1", "knn_top1"):
        scored = [
            (statistics.mean(c.values(metric).values()), c) for c in pretrain if c.values(metric)
        ]
        if scored:
            return max(scored, key=lambda pair: pair[0])[1]
    return None


def delta_text(plus: CellResults, minus: CellResults, metric: str) -> str:
    """Ours for a claimed delta: mean(plus) - mean(minus) ± the sample std of the per-seed paired
    differences (when both cells hold the metric for the same seeds, two or more of them)."""
    a, b = plus.values(metric), minus.values(metric)
    if not a or not b:
        lacking = [c.cell for c, v in ((plus, a), (minus, b)) if not v]
        return f"not measured ({', '.join(lacking)} has no {metric})"
    difference = statistics.mean(a.values()) - statistics.mean(b.values())
    if set(a) != set(b):
        return f"{difference:+.2f} ± n/a (unpaired: seeds {sorted(a)} vs {sorted(b)})"
    paired = [a[seed] - b[seed] for seed in sorted(a)]
    _, std = mean_std(paired)
    return f"{difference:+.2f} ± {'n/a' if std is None else f'{std:.2f}'}"


# ---------------------------------------------------------------------------------------------
# REPORT.md


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _references(spec: StudySpec, cell: str) -> str:
    found = [
        f"{ref.value:.2f} {_METRIC_NAMES.get(ref.metric, ref.metric)} ({_cell(ref.source)})"
        for ref in spec.references
        if ref.cell == cell
    ]
    return "<br>".join(found) or "–"


def _seeds_text(cell: CellResults) -> str:
    have = ", ".join(map(str, cell.seeds)) or "none"
    missing = cell.missing_seeds
    return f"{have} (**missing: {', '.join(map(str, missing))}**)" if missing else have


def _wall_text(cell: CellResults) -> str:
    walls = list(cell.values("wall_s").values())
    if not walls:
        return "–"
    return f"{format_duration(statistics.mean(walls))} per seed ({format_duration(sum(walls))})"


def results_table(spec: StudySpec, cells: Sequence[CellResults]) -> list[str]:
    """The markdown lines of the main table, one row per cell."""
    lines = [
        "| cell | method | i-Mix | backbone | seeds | kNN top-1 (mean ± std) | "
        "linear top-1 (mean ± std) | reference (value, source) | wall time |",
        "| --- | --- | --- | --- | --- | ---: | ---: | --- | --- |",
    ]
    for cell in cells:
        name = f"`{cell.cell}`" + (" (joint)" if cell.task == "joint" else "")
        knn = format_mean_std(list(cell.values("knn_top1").values()))
        linear = format_mean_std(list(cell.values("linear_top1").values()))
        parts = [name, cell.text("method") or "–", cell.text("imix") or "–",
                 cell.text("backbone") or "–", _seeds_text(cell), knn, linear,
                 _references(spec, cell.cell), _wall_text(cell)]  # fmt: skip
        lines.append("| " + " | ".join(_cell(p) if i else p for i, p in enumerate(parts)) + " |")
    return lines


def deltas_table(spec: StudySpec, cells: Sequence[CellResults]) -> list[str]:
    """The markdown lines of the claimed deltas beside ours (none when the study claims none)."""
    if not spec.deltas:
        return []
    by_name = {cell.cell: cell for cell in cells}
    lines = ["| delta | claimed (source) | ours (mean ± paired std) |", "| --- | --- | ---: |"]
    for delta in spec.deltas:
        what = (f"{_cell(delta.name)}<br>`{delta.plus}` − `{delta.minus}`, "
                f"{_METRIC_NAMES.get(delta.metric, delta.metric)}")  # fmt: skip
        claimed = f"{delta.claimed:+.2f} ({_cell(delta.source)})"
        ours = delta_text(by_name[delta.plus], by_name[delta.minus], delta.metric)
        lines.append(f"| {what} | {claimed} | {_cell(ours)} |")
    return lines


def _command_text(command: Any) -> str:
    if isinstance(command, list | tuple):
        return shlex.join(str(part) for part in command)
    return str(command) if command else "(not recorded)"


def _shown(path: Path) -> str:
    """`path` relative to the working folder when it lies inside it (a report that names no
    machine-specific folder), else as given."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix() or "."
    except ValueError:
        return str(path)


def _header_lines(spec: StudySpec, run: Mapping[str, Any], output_dir: Path) -> list[str]:
    profile_name = str(run["profile"])
    profile = spec.profiles[profile_name]
    lines = [CPU_FIRST_LINE, ""] if profile_name == "cpu" else []
    lines += [f"# Study {spec.name}: {profile_name} profile", "", spec.description.strip(), ""]
    lines += [f"Made by: `{_command_text(run.get('command'))}`"]
    if run.get("started"):
        lines[-1] += f" (started {run['started']})"
    lines += [
        f"Report rewritten by: `python packages/pipelines/study.py report {_shown(output_dir)}`"
    ]
    lines += [""]
    lines += [f"## Profile `{profile_name}`", "", profile.description.strip(), ""]
    scale_downs = list(profile.scale_downs)
    lines += [
        "Scale-downs from the paper:" if scale_downs else "Scale-downs: none (the paper's scale)."
    ]
    lines += [f"- {item}" for item in scale_downs] + [""]
    evaluation = spec.evaluation
    probe_args = " ".join(evaluation.probe_args) or "none"
    lines += [
        f"Evaluation after each pretrain cell: {evaluation.probe} probe, label fraction "
        f"{evaluation.label_fraction}, extra probe options: {probe_args}. Joint cells are "
        "scored by their own validation (linear top-1 = the joint classifier's final val top-1).",
        "",
    ]
    return lines


def report_markdown(
    spec: StudySpec,
    run: Mapping[str, Any],
    cells: Sequence[CellResults],
    output_dir: Path,
    pictures: Mapping[str, str],
    notes: Sequence[str],
) -> str:
    """The whole REPORT.md. pictures: caption -> file name in output_dir; notes: lines about
    pictures that could not be drawn."""
    lines = _header_lines(spec, run, output_dir)
    lines += ["## Results", "", *results_table(spec, cells), ""]
    lines += [
        "Mean ± sample standard deviation (ddof = 1) over the seeds listed; n/a with one seed. "
        "Accuracies in percent."
    ]
    missing = [f"`{c.cell}` seeds {', '.join(map(str, c.missing_seeds))}" for c in cells
               if c.missing_seeds]  # fmt: skip
    if missing:
        lines += ["", "**Not finished:** " + "; ".join(missing) + "."]
    deltas = deltas_table(spec, cells)
    if deltas:
        lines += ["", "## Deltas the paper claims", "", *deltas, ""]
        lines += [
            "Ours: mean of plus − mean of minus; ± the sample std of the per-seed differences."
        ]
    lines += ["", "## Pictures", ""]
    for caption, name in pictures.items():
        lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"


def write_report(output_dir: str | Path) -> Path:
    """Write `<output_dir>/REPORT.md` and its pictures from the folder's cells.csv, run.json and
    study.yaml; returns the REPORT.md path. Rewriting it after more cells finished is safe."""
    from contrastkit.pipelines.study import report_plots  # matplotlib only here

    output_dir = Path(output_dir)
    run = read_run_json(output_dir)
    spec = load_study_copy(output_dir, run)
    profile = str(run["profile"])
    if profile not in spec.profiles:
        raise ValueError(
            f"{output_dir / RUN_FILE}: profile {profile!r} is not one of study {spec.name!r}'s "
            f"profiles {list(spec.profiles)}"
        )
    rows = read_cells(output_dir)
    seeds = [int(s) for s in run.get("seeds") or []]
    seeds += [s for s in spec.profiles[profile].seeds if s not in seeds]
    cells = collect_cells(spec, rows, seeds, output_dir / CELLS_FILE)
    pictures, notes = report_plots.draw_pictures(spec, cells, output_dir, best_cell(cells))
    text = report_markdown(spec, run, cells, output_dir, pictures, notes)
    return write_text_atomic(output_dir / STUDY_REPORT_FILE, text)
