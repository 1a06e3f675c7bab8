"""Compare runs: overlay several runs' validation accuracy and loss per epoch on one figure, print
their results.csv rows as one markdown table, and write both into a report.md beside the figure.

`python packages/pipelines/compare.py RUN_OR_CSV [RUN_OR_CSV ...] --output compare.png [--metric M ...]`
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from contrastkit.pipelines.compare_report import COMMAND, check_report_path, write_compare_report
from contrastkit.pipelines.evaluation.results import (
    append_results,
    read_csv_table,
    read_results,
    results_table_markdown,
)
from contrastkit.pipelines.plots import plot_compare
from contrastkit.pipelines.plots._figure import check_accuracy_ylim, check_num_classes
from contrastkit.pipelines.plots.chance import run_num_classes
from contrastkit.pipelines.preflight import check_writable_dir, describe_os_error
from contrastkit.pipelines.run_files import (
    COMPARE_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    REPORT_FILE,
    RESULTS_FILE,
)

# Shown by default in the printed table when present (the full rows hold more, e.g. checkpoint paths).
TABLE_COLUMNS: tuple[str, ...] = (
    "run",
    "method",
    "backbone",
    "epochs",
    "dataset",
    "mode",
    "label_fraction",
    "knn_top1",
    "knn_top1_k20",
    "linear_top1",
    "top5",
    "wall_s",
)
# Default panels: the first set that every run has values for.
_DEFAULT_METRICS: tuple[tuple[str, ...], ...] = (
    ("val_top1", "val_loss"),
    ("val_top1", "loss"),
    ("val_top1",),
    ("loss",),
)


@dataclass
class RunCurves:
    """One run's per-epoch records, read from a probe or a pretrain metrics.csv.

    kind: "probe" (rows: epoch, train_loss, val_loss, val_top1, val_top5, ...) or "pretrain"
    (per-step rows, averaged here per epoch: loss, lr, knn_top1, knn_top5; `val_top1` is added as
    an alias of knn_top1, the pretrain run's validation accuracy: kNN on the test split).
    num_classes: classes of the run's data when its folder says (`plots.chance.run_num_classes`).
    """

    label: str
    source: Path
    kind: str
    history: list[dict[str, float]]
    num_classes: int | None = None

    def metric_names(self) -> list[str]:
        found: list[str] = []
        for record in self.history:
            found.extend(
                key for key, value in record.items() if key not in found and math.isfinite(value)
            )
        return found


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def is_results_csv(path: Path) -> bool:
    """A results.csv (one row per probe run) rather than a per-epoch or per-step metrics file."""
    header, _ = read_csv_table(path)
    return "method" in header and "epoch" not in header


def _pretrain_history(rows: Sequence[Mapping[str, str]]) -> list[dict[str, float]]:
    # Per-step rows carry epoch = steps done / steps per epoch (0.25, 0.5, ..., 1.0, 1.25, ...):
    # rows in (e - 1, e] make epoch e. Its record: mean loss, last lr, last measured kNN accuracy.
    by_epoch: dict[int, list[Mapping[str, str]]] = {}
    for row in rows:
        epoch = _number(row.get("epoch"))
        if math.isfinite(epoch):
            by_epoch.setdefault(max(1, math.ceil(epoch - 1e-9)), []).append(row)
    history = []
    for epoch, group in sorted(by_epoch.items()):
        record: dict[str, float] = {"epoch": float(epoch)}
        losses = [_number(r.get("loss")) for r in group]
        losses = [value for value in losses if math.isfinite(value)]
        record["loss"] = sum(losses) / len(losses) if losses else math.nan
        for key in ("lr", "knn_top1", "knn_top5"):
            values = [_number(r.get(key)) for r in group]
            values = [value for value in values if math.isfinite(value)]
            record[key] = values[-1] if values else math.nan
        record["val_top1"] = record["knn_top1"]
        record["val_top5"] = record["knn_top5"]
        history.append(record)
    return history


def read_run_curves(path: str | Path, label: str | None = None) -> RunCurves:
    """Per-epoch records of a run folder or of a metrics CSV file.

    A folder's per-epoch `history.csv` (joint training) is read when present, else its
    `metrics.csv` (probe: per epoch; pretrain: per step, averaged per epoch here).
    """
    path = Path(path)
    if path.is_dir():
        file = path / HISTORY_FILE if (path / HISTORY_FILE).is_file() else path / METRICS_FILE
    else:
        file = path
    if not file.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} has no {METRICS_FILE}; expected a probe output folder, a pretrain run "
            f"folder, a metrics.csv or a results.csv"
        )
    header, rows = read_csv_table(file)
    if "epoch" not in header:
        raise ValueError(
            f"{file} has no 'epoch' column (its columns: {header}); expected a probe metrics.csv "
            "(epoch, val_top1, val_loss, ...) or a pretrain metrics.csv (step, epoch, loss, lr, ...)"
        )
    if "step" in header:
        kind, history = "pretrain", _pretrain_history(rows)
    else:
        kind = "probe"
        history = [{key: _number(value) for key, value in row.items() if key} for row in rows]
    if not history:
        raise ValueError(f"{file} holds no rows yet")
    name = label or (path.name if path.is_dir() else file.parent.name) or str(file)
    return RunCurves(name, file, kind, history, run_num_classes(file.parent))


def default_metrics(runs: Sequence[RunCurves]) -> tuple[str, ...]:
    """The first of (val_top1, val_loss), (val_top1, loss), (val_top1,), (loss,) that every run has."""
    for metrics in _DEFAULT_METRICS:
        if all(all(metric in run.metric_names() for metric in metrics) for run in runs):
            return metrics
    found = {run.label: run.metric_names() for run in runs}
    raise ValueError(
        f"no metric is shared by every run; pass --metric. Each run's metrics: {found}"
    )


def _unique_labels(runs: Sequence[RunCurves]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        if run.label in seen:
            seen[run.label] += 1
            run.label = f"{run.label} ({seen[run.label]})"
        else:
            seen[run.label] = 1


def merged_results_markdown(results_files: Sequence[Path], *, all_columns: bool = False) -> str:
    """One markdown table of the rows of several results.csv files, with a `run` column (folder name)."""
    with tempfile.TemporaryDirectory() as folder:
        merged = Path(folder) / RESULTS_FILE
        for file in results_files:
            for row in read_results(file):
                append_results(merged, {"run": file.parent.name, **row})
        if not merged.is_file():
            raise ValueError(f"the results files {[str(f) for f in results_files]} hold no rows")
        header, _ = read_csv_table(merged)
        columns = header if all_columns else [c for c in TABLE_COLUMNS if c in header]
        return results_table_markdown(merged, columns=columns)


def shared_num_classes(runs: Sequence[RunCurves]) -> int | None:
    """The number of classes the runs agree on (those that say), else None (no chance line)."""
    found = {run.num_classes for run in runs if run.num_classes is not None}
    return found.pop() if len(found) == 1 else None


def compare(
    paths: Sequence[str | Path],
    output: str | Path | None,
    *,
    metrics: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    title: str = "Runs compared",
    all_columns: bool = False,
    num_classes: int | None = None,
    accuracy_ylim: str = "full",
    report: str | Path | None = None,
) -> tuple[Path | None, str | None]:
    """Plot the curves of every run among `paths` and tabulate every results.csv among them.

    Args:
        paths: run folders (their metrics.csv is plotted; a results.csv beside it is tabulated),
            metrics.csv files, or results.csv files.
        output: PNG path of the figure (needed when some path has curves).
        metrics: per-epoch keys to plot, one panel each (default: see `default_metrics`).
        labels: legend labels, one per run with curves, in order (default: folder names).
        num_classes: classes for the accuracy panels' chance line; None: the number the runs'
            folders agree on (`shared_num_classes`), no line when they do not say or disagree.
        accuracy_ylim: "full" (accuracy panels on 0-100 %) or "auto" (zoomed on the values).
        report: where to write the report (figure, final numbers, results tables); None writes
            none. An existing report.md of another command is never overwritten (ValueError).

    Returns:
        (the PNG written or None, the markdown table or None).
    """
    if not paths:
        raise ValueError("give at least one run folder, metrics.csv or results.csv")
    check_accuracy_ylim(accuracy_ylim)
    check_num_classes(num_classes)
    if report is not None:
        check_report_path(report)  # before anything is drawn
    runs: list[RunCurves] = []
    results: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if not path.exists():
            raise FileNotFoundError(f"{str(path)!r} does not exist")
        if path.is_dir():
            if (path / RESULTS_FILE).is_file():
                results.append(path / RESULTS_FILE)
            if (path / METRICS_FILE).is_file() or not (path / RESULTS_FILE).is_file():
                runs.append(read_run_curves(path))
        elif path.suffix == ".csv" and is_results_csv(path):
            results.append(path)
        else:
            runs.append(read_run_curves(path))
    if labels is not None:
        if len(labels) != len(runs):
            raise ValueError(
                f"--labels gives {len(labels)} labels but there are {len(runs)} runs with curves "
                f"({[str(run.source) for run in runs]})"
            )
        for run, label in zip(runs, labels, strict=True):
            run.label = label
    _unique_labels(runs)

    chosen: tuple[str, ...] = ()
    if runs:
        if output is None:
            raise ValueError("--output PNG is needed to plot the runs' curves")
        chosen = tuple(metrics) if metrics else default_metrics(runs)
        for run in runs:
            missing = [metric for metric in chosen if metric not in run.metric_names()]
            if missing:
                raise ValueError(
                    f"run {run.label!r} has no values for {missing}; its metrics: "
                    f"{run.metric_names()}"
                )
    table = merged_results_markdown(results, all_columns=all_columns) if results else None
    # Every input is read and checked: now the folders written to, before anything is drawn.
    if runs:
        check_writable_dir(Path(output).parent, "--output folder")  # type: ignore[arg-type]
    if report is not None:
        check_writable_dir(Path(report).parent, "report folder")
    png = None
    if runs:
        png = plot_compare(
            {run.label: run.history for run in runs},
            output,  # type: ignore[arg-type]
            metrics=chosen,
            title=title,
            num_classes=num_classes if num_classes is not None else shared_num_classes(runs),
            accuracy_ylim=accuracy_ylim,
        )
    if report is not None:
        write_compare_report(report, title=title, png=png, runs=runs, metrics=chosen, table=table)
    return png, table


_DESCRIPTION = (
    "Overlay several runs' validation accuracy and loss per epoch on one figure (probe "
    "metrics.csv: val_top1/val_loss; pretrain metrics.csv: knn_top1 as val_top1, loss), "
    "print the results.csv rows given as one markdown table, and write report.md beside the "
    "figure (the figure, each run's final numbers, the results table)."
)


def build_parser() -> argparse.ArgumentParser:
    """The `contrastkit-compare` parser."""
    parser = argparse.ArgumentParser(prog="contrastkit-compare", description=_DESCRIPTION)
    parser.add_argument(
        "paths", nargs="+", metavar="RUN_OR_CSV", help="run folder, metrics.csv or results.csv"
    )
    parser.add_argument(
        "--output", default=COMPARE_FILE, help=f"PNG to write (default: {COMPARE_FILE})"
    )
    parser.add_argument(
        "--metric",
        nargs="+",
        dest="metrics",
        help="per-epoch keys to plot, one panel each (default: val_top1 val_loss when every run has them)",
    )
    parser.add_argument("--labels", nargs="+", help="legend labels, one per run with curves")
    parser.add_argument("--title", default="Runs compared", help="figure title")
    parser.add_argument("--all-columns", action="store_true", help="print every results.csv column")
    parser.add_argument(
        "--zoom",
        action="store_true",
        help="zoom accuracy panels on the values (default: 0-100 %% with the chance level)",
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        help="classes of the validation data, for the chance line (default: what the run "
        "folders say: checkpoint meta.json, config.yaml or results.csv)",
    )
    parser.add_argument(
        "--report",
        help=f"markdown report to write (default: {REPORT_FILE} beside the --output PNG; "
        "another command's report is never overwritten)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (`contrastkit-compare`, `packages/pipelines/compare.py`).

    Returns the exit status: 0 done, 2 bad input.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_classes is not None and args.num_classes < 2:
        parser.error(f"--num-classes must be >= 2, got {args.num_classes}")
    report = Path(args.report) if args.report else Path(args.output).parent / REPORT_FILE
    try:
        png, table = compare(
            args.paths,
            args.output,
            metrics=args.metrics,
            labels=args.labels,
            title=args.title,
            all_columns=args.all_columns,
            num_classes=args.num_classes,
            accuracy_ylim="auto" if args.zoom else "full",
            report=report,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"{COMMAND}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. the disk filled up while writing
        print(f"{COMMAND}: error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    if table is not None:
        print(table, end="")
    if png is not None:
        print(f"{COMMAND}: wrote {png}", file=sys.stderr)
    print(f"{COMMAND}: wrote {report}", file=sys.stderr)
    return 0
