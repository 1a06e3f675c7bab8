"""The study report's pictures: bars.png (linear and kNN top-1 per cell, mean with a sample-std
error bar, the published numbers as markers), curves.png (the cells' training curves overlaid, via
the compare command's readers and plot_compare) and the best cell's t-SNE and neighbour grid,
with its model summary beside them (best_model_summary.md).
"""

from __future__ import annotations

import re
import shutil
import statistics
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from contrastkit.pipelines.atomic import atomic_write
from contrastkit.pipelines.compare import RunCurves, read_run_curves, shared_num_classes
from contrastkit.pipelines.plots import _figure, plot_compare
from contrastkit.pipelines.run_files import MODEL_SUMMARY_FILE, NN_GRID_FILE, TSNE_FILE
from contrastkit.pipelines.study.report import (
    CELLS_DIR,
    PRETRAIN_DIR,
    PROBE_DIR,
    CellResults,
    best_metric,
    mean_std,
    seed_dir,
)
from contrastkit.pipelines.study.spec import StudySpec

BARS_FILE = "bars.png"
STUDY_CURVES_FILE = "curves.png"
BEST_TSNE_FILE = "best_tsne.png"
BEST_NN_GRID_FILE = "best_nn_grid.png"
BEST_SUMMARY_FILE = "best_model_summary.md"
_SUMMARY_TOTAL = re.compile(r"^\| \*\*Total\*\* \| \| \*\*([\d,]+)\*\*", re.M)
# Panels of curves.png, in this order: those that every drawn cell has values for.
CURVE_METRICS: tuple[str, ...] = ("val_top1", "loss")
# References drawn on the bars (accuracies; wall times have no place on this axis).
_ACCURACY_REFERENCES = ("linear_top1", "knn_top1", "val_top1")
_BAR_METRICS = (
    ("linear_top1", "linear top-1", "tab:blue"),
    ("knn_top1", "kNN top-1", "tab:orange"),
)


def plot_bars(spec: StudySpec, cells: Sequence[CellResults], out_png: Path) -> Path:
    """One group per cell: a bar per accuracy (linear, kNN) at the mean over seeds with the sample
    std as error bar (none with one seed), and each reference number as a black marker on the bar
    of its metric (kNN references on the kNN bar, every other metric on the linear bar)."""
    figure = Figure(figsize=(max(6.0, 1.4 * len(cells) + 2.0), 4.5))
    ax = figure.subplots()
    width = 0.38
    labelled: set[str] = set()  # each legend entry once
    for index, cell in enumerate(cells):
        for offset, (metric, label, colour) in zip(
            (-width / 2, width / 2), _BAR_METRICS, strict=True
        ):
            mean, std = mean_std(list(cell.values(metric).values()))
            if mean is not None:
                ax.bar(index + offset, mean, width, color=colour, yerr=std, capsize=4,
                       label=None if label in labelled else label)  # fmt: skip
                labelled.add(label)
        for ref in spec.references:
            if ref.cell == cell.cell and ref.metric in _ACCURACY_REFERENCES:
                offset = width / 2 if ref.metric == "knn_top1" else -width / 2
                ax.plot(index + offset, ref.value, marker="D", color="black", linestyle="none",
                        label=None if "published" in labelled else "published")  # fmt: skip
                labelled.add("published")
        if not cell.rows:
            ax.text(index, 2.0, "not run", ha="center", color="grey", rotation=90, va="bottom")
    ax.set_xticks(range(len(cells)), [cell.cell for cell in cells], rotation=20, ha="right")
    ax.set(
        ylim=(0.0, 100.0), ylabel="top-1 accuracy (%)", title=f"{spec.name}: mean ± std over seeds"
    )
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[1]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    return _figure.save_png(figure, out_png)


def cell_run_dir(output_dir: Path, cell: CellResults) -> Path | None:
    """The run folder of the cell's first seed: cells.csv's run_dir (relative to output_dir when
    not absolute), else `cells/<cell>/seed<k>/pretrain`; None when the cell has no row."""
    if not cell.rows:
        return None
    row = cell.rows[0]
    if row["run_dir"]:
        path = Path(row["run_dir"])
        return path if path.is_absolute() else output_dir / path
    return seed_dir(output_dir, cell.cell, int(row["seed"])) / PRETRAIN_DIR


def plot_curves(
    spec: StudySpec, cells: Sequence[CellResults], output_dir: Path, out_png: Path
) -> tuple[Path | None, list[str]]:
    """curves.png: the first seed's curves of every cell with a run folder (pretrain metrics.csv:
    val_top1 = the kNN monitor, loss; joint history.csv), on the CURVE_METRICS panels that all of
    them have. Returns (the PNG or None, notes on what was left out and why)."""
    runs: list[RunCurves] = []
    notes: list[str] = []
    for cell in cells:
        run_dir = cell_run_dir(output_dir, cell)
        if run_dir is None:
            continue
        try:
            runs.append(read_run_curves(run_dir, f"{cell.cell} (seed {cell.seeds[0]})"))
        except (FileNotFoundError, ValueError) as error:
            notes.append(f"curves: `{cell.cell}` left out: {error}")
    metrics = [m for m in CURVE_METRICS if runs and all(m in r.metric_names() for r in runs)]
    if not metrics and runs:
        # No panel every run has (e.g. pretrain runs without a kNN monitor beside joint runs):
        # draw the curve most runs have, over those runs (val_top1 first on a tie).
        having = {m: [r for r in runs if m in r.metric_names()] for m in CURVE_METRICS}
        metric = max(CURVE_METRICS, key=lambda m: len(having[m]))
        if having[metric]:
            left = [r.label for r in runs if r not in having[metric]]
            notes.append(f"curves.png shows {metric} only; left out (no {metric} curve): {left}")
            runs, metrics = having[metric], [metric]
    if not metrics:
        notes.append(
            "curves.png not drawn: no curve of " + " or ".join(CURVE_METRICS) + " is shared by "
            f"every cell's run ({ {r.label: r.metric_names() for r in runs} })"
        )
        return None, notes
    png = plot_compare(
        {run.label: run.history for run in runs},
        out_png,
        metrics=metrics,
        title=f"{spec.name}: each cell's first seed",
        num_classes=shared_num_classes(runs),
    )
    return png, notes


BARS_CAPTION = "Top-1 accuracy per cell: mean over seeds, error bar = sample std; ◆ = published"
CURVES_CAPTION = (
    "Training curves of each cell's first seed (val_top1 of a pretrain run: its kNN monitor on "
    "the test split; of a joint run: its classifier on the validation split)"
)
# The best cell's pictures: (file its probe writes, file in the study folder, what it shows).
_BEST_PICTURES = (
    (TSNE_FILE, BEST_TSNE_FILE, "t-SNE of the test features"),
    (NN_GRID_FILE, BEST_NN_GRID_FILE, "nearest neighbours of test images"),
)


def _best_probe_file(best: CellResults | None, output_dir: Path, name: str) -> Path | None:
    """The file `name` of the best cell's first-seed probe folder; None without a best cell."""
    if best is None:
        return None
    return seed_dir(output_dir, best.cell, best.seeds[0]) / PROBE_DIR / name


def _best_caption(best: CellResults, what: str) -> str:
    return f"Best cell `{best.cell}` (seed {best.seeds[0]}): {what}"


def copy_best_pictures(
    best: CellResults | None, output_dir: Path
) -> tuple[dict[str, str], list[str]]:
    """Copy the best cell's first-seed probe tsne.png / nn_grid.png to best_tsne.png /
    best_nn_grid.png (atomically; an older copy is removed when there is nothing to copy)."""
    pictures: dict[str, str] = {}
    notes: list[str] = []
    for source_name, target_name, what in _BEST_PICTURES:
        target = output_dir / target_name
        source = _best_probe_file(best, output_dir, source_name)
        if best is not None and source is not None and source.is_file():
            atomic_write(target, lambda tmp, src=source: shutil.copyfile(src, tmp))
            pictures[_best_caption(best, what)] = target_name
        else:
            target.unlink(missing_ok=True)
            where = source if source is not None else "no pretrain cell has a linear or kNN top-1"
            notes.append(f"{what}: not shown, the probe wrote none ({where})")
    return pictures, notes


def _summary_line(best: CellResults, summary: Path) -> str:
    """The report's line that links best_model_summary.md, with the total it gives."""
    total = _SUMMARY_TOTAL.search(summary.read_text())
    parameters = f", {total.group(1)} parameters" if total else ""
    return (
        f"model summary of the best cell `{best.cell}` (seed {best.seeds[0]}: its backbone and "
        f"the probe's linear head{parameters}): [{BEST_SUMMARY_FILE}]({BEST_SUMMARY_FILE})"
    )


def copy_best_summary(best: CellResults | None, output_dir: Path) -> list[str]:
    """Copy the best cell's first-seed probe model_summary.md (its layers, output shapes and
    parameters) to best_model_summary.md; the report's line that links it, none when the probe
    wrote no summary (an older copy is then removed)."""
    target = output_dir / BEST_SUMMARY_FILE
    source = _best_probe_file(best, output_dir, MODEL_SUMMARY_FILE)
    if best is None or source is None or not source.is_file():
        target.unlink(missing_ok=True)
        return []
    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    return [_summary_line(best, target)]


def kept_pictures(
    spec: StudySpec, output_dir: Path, best: CellResults | None
) -> tuple[dict[str, str], list[str]]:
    """A study folder without its run folders (`cells/`), such as a committed result: the
    curves and the best cell's pictures cannot be drawn again, so those an earlier report drew
    there are kept and shown as they are. Returns (caption -> file name, notes)."""
    pictures: dict[str, str] = {}
    if (output_dir / STUDY_CURVES_FILE).is_file():
        pictures[CURVES_CAPTION] = STUDY_CURVES_FILE
    notes: list[str] = []
    if spec.evaluation.pictures and best is not None:
        for _, name, what in _BEST_PICTURES:
            if (output_dir / name).is_file():
                pictures[_best_caption(best, what)] = name
        if (output_dir / BEST_SUMMARY_FILE).is_file():
            notes.append(_summary_line(best, output_dir / BEST_SUMMARY_FILE))
    kept = ", ".join(pictures.values())
    done = f"{kept} kept as the report beside the runs drew them" if kept else "nothing else kept"
    notes.insert(
        0,
        f"this folder has no `{CELLS_DIR}/` (the run folders), so the curves and the best cell's "
        f"pictures could not be drawn again: {done}; bars.png and the tables were rebuilt from "
        "cells.csv",
    )
    return pictures, notes


def draw_pictures(
    spec: StudySpec, cells: Sequence[CellResults], output_dir: Path, best: CellResults | None
) -> tuple[dict[str, str], list[str]]:
    """Every picture of the report. Returns (caption -> file name in output_dir, notes)."""
    pictures: dict[str, str] = {BARS_CAPTION: BARS_FILE}
    plot_bars(spec, cells, output_dir / BARS_FILE)
    if not (output_dir / CELLS_DIR).is_dir():
        kept, notes = kept_pictures(spec, output_dir, best)
        pictures.update(kept)
    else:
        png, notes = plot_curves(spec, cells, output_dir, output_dir / STUDY_CURVES_FILE)
        if png is not None:
            pictures[CURVES_CAPTION] = STUDY_CURVES_FILE
        if spec.evaluation.pictures:
            best_pictures, best_notes = copy_best_pictures(best, output_dir)
            pictures.update(best_pictures)
            notes += best_notes + copy_best_summary(best, output_dir)
    if best is not None:
        metric = best_metric(best)
        value = statistics.mean(best.values(metric).values())
        notes.append(f"best pretrain cell by mean {metric}: `{best.cell}` ({value:.2f})")
    return pictures, notes
