"""compare's report.md: the comparison figure, each compared run's final numbers (last value of
every plotted metric; best value and epoch of accuracies) and the results tables, written beside
the figure; another command's report.md is never overwritten."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from contrastkit.pipelines.evaluation.report import ReportSection, report_written_by, write_report
from contrastkit.pipelines.evaluation.results import markdown_cell
from contrastkit.pipelines.plots._figure import accuracy_top_k
from contrastkit.pipelines.run_files import REPORT_FILE

if TYPE_CHECKING:
    from contrastkit.pipelines.compare import RunCurves

COMMAND = "contrastkit-compare"  # the console script: messages and the report's `written by`


def _last(run: RunCurves, metric: str) -> tuple[float, float] | None:
    """(epoch, value) of the last finite value of `metric`, or None."""
    points = [(r.get("epoch", math.nan), r.get(metric, math.nan)) for r in run.history]
    points = [(e, v) for e, v in points if math.isfinite(v)]
    return points[-1] if points else None


def _best(run: RunCurves, metric: str) -> tuple[float, float] | None:
    """(epoch, value) of the highest finite value of `metric` (the first such epoch), or None."""
    points = [(r.get("epoch", math.nan), r.get(metric, math.nan)) for r in run.history]
    points = [(e, v) for e, v in points if math.isfinite(v)]
    return max(points, key=lambda point: point[1]) if points else None


def _cell(value: float, accuracy: bool) -> str:
    return f"{value:.2f}" if accuracy else f"{value:.4g}"


def runs_table_markdown(runs: Sequence[RunCurves], metrics: Sequence[str]) -> str:
    """One row per run: its label, source file, last epoch, and per metric its last value
    (accuracy metrics also their best value and its epoch). Markdown ending in a newline."""
    header = ["run", "source", "epochs"]
    for metric in metrics:
        header.append(f"{metric} (last)")
        if accuracy_top_k(metric) is not None:
            header.append(f"{metric} (best, epoch)")
    lines = ["| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * (len(header) - 2)]
    for run in runs:
        epochs = [r["epoch"] for r in run.history if math.isfinite(r.get("epoch", math.nan))]
        cells = [markdown_cell(run.label), f"`{markdown_cell(str(run.source))}`"]
        cells.append(f"{max(epochs):g}" if epochs else "")
        for metric in metrics:
            accuracy = accuracy_top_k(metric) is not None
            last = _last(run, metric)
            cells.append(_cell(last[1], accuracy) if last else "")
            if accuracy:
                best = _best(run, metric)
                cells.append(f"{_cell(best[1], True)} ({best[0]:g})" if best else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def check_report_path(report: str | Path) -> Path:
    """`report` if compare may write it: a new file or a report compare wrote before (another
    command's report.md in that folder is never overwritten: ValueError naming it)."""
    path = Path(report)
    if path.is_dir():
        raise ValueError(
            f"report path {str(path)!r} is a folder; give a file such as {REPORT_FILE}"
        )
    if path.exists() and report_written_by(path) != COMMAND:
        raise ValueError(
            f"{str(path)!r} is another command's report; write the comparison elsewhere "
            "(--output in another folder, or --report PATH)"
        )
    return path


def write_compare_report(
    report: str | Path,
    *,
    title: str,
    png: Path | None,
    runs: Sequence[RunCurves],
    metrics: Sequence[str],
    table: str | None,
) -> Path:
    """The comparison's report.md: the figure, the runs' final numbers, the results tables."""
    path = check_report_path(report)
    sections = []
    if png is not None:
        sections.append(ReportSection("Curves", images=[(png.resolve(), title)]))
    if runs:
        sections.append(ReportSection("Final numbers", runs_table_markdown(runs, metrics)))
    if table is not None:
        sections.append(ReportSection("Results", table))
    return write_report(
        path.parent,
        title=title,
        sections=sections,
        include_figures=False,
        include_results=False,
        written_by=COMMAND,
        file_name=path.name,
    )
