"""Training curves: a pretrain run's metrics.csv (loss, learning rate, kNN accuracy), a probe's
per-epoch history (loss and accuracy), and several runs' histories overlaid for comparison.

Every figure follows _figure's axes rules: its panels share one epoch x axis with integer ticks,
accuracy panels show the chance level on 0-100 % (accuracy_ylim="auto" zooms), and a loss panel
clips a first-epoch outlier (its title says so).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from contrastkit.pipelines.evaluation.results import read_csv_table, read_history_csv
from contrastkit.pipelines.plots import _figure
from contrastkit.pipelines.plots.chance import run_num_classes
from contrastkit.pipelines.run_files import HISTORY_FILE

History = Sequence[Mapping[str, float]]


# ---------------------------------------------------------------------------------------------
# Pretraining curves from metrics.csv


def _read_metrics(metrics_csv: Path) -> dict[str, np.ndarray]:
    if not metrics_csv.is_file():
        raise FileNotFoundError(f"metrics file not found: {metrics_csv}")
    header, rows = read_csv_table(metrics_csv)
    required = ("step", "epoch", "loss", "lr")
    missing = [name for name in required if name not in header]
    if missing:
        raise ValueError(
            f"{metrics_csv} lacks columns {missing}; a metrics.csv has at least {list(required)}, "
            f"this one has {header}"
        )

    def column(name: str) -> np.ndarray:
        values = []
        for row in rows:
            text = (row.get(name) or "").strip()
            try:
                values.append(float(text) if text else math.nan)
            except ValueError:
                values.append(math.nan)
        return np.asarray(values, dtype=np.float64)

    return {name: column(name) for name in header}


def _epoch_positions(epoch: np.ndarray) -> np.ndarray:
    """x positions in epochs of the rows: the logged value, which pretrain writes as the
    fractional progress global_step / steps_per_epoch. A writer that logs an integer epoch
    index on every row of an epoch gets its rows spread evenly over (e, e + 1]."""
    finite = epoch[np.isfinite(epoch)]
    if np.unique(finite).size == finite.size:
        return epoch
    positions = epoch.copy()
    for value in np.unique(finite):
        rows = np.flatnonzero(epoch == value)
        positions[rows] = value + np.arange(1, rows.size + 1) / rows.size
    return positions


def _pretrain_figure(
    metrics: Mapping[str, np.ndarray],
    *,
    num_classes: int | None = None,
    accuracy_ylim: str = "full",
) -> Figure:
    has_knn = "knn_top1" in metrics and bool(np.isfinite(metrics["knn_top1"]).any())
    figure = Figure(figsize=(5.0 * (3 if has_knn else 2), 4.0))
    axes = figure.subplots(1, 3 if has_knn else 2, squeeze=False, sharex=True)[0]
    loss, lr = metrics["loss"], metrics["lr"]
    position = _epoch_positions(metrics["epoch"])
    drawn: list[_figure.Series] = []

    ax = axes[0]
    ax.set(title="Training loss", ylabel="loss")
    ok = np.isfinite(position) & np.isfinite(loss)
    if ok.any():
        ax.plot(position[ok], loss[ok], color="tab:blue", alpha=0.35, linewidth=0.8,
                label="logged steps")  # fmt: skip
        # Epoch e holds the rows logged in (e - 1, e]; its mean is drawn at its end, e.
        epoch_index = np.ceil(position[ok] - 1e-9)
        ends = np.unique(epoch_index)
        means = [loss[ok][epoch_index == end].mean() for end in ends]
        ax.plot(ends, means, color="tab:blue", marker=_figure.marker(ends.size), label="epoch mean")
        ax.legend()
        drawn.append((position[ok], loss[ok]))
        _figure.style_panel(ax, "loss", drawn[-1:], num_classes, accuracy_ylim)
    else:
        _figure.no_data(ax, "no loss logged yet")
    ax.grid(alpha=0.3)

    ax = axes[1]
    ok = np.isfinite(position) & np.isfinite(lr)
    if ok.any():
        ax.plot(position[ok], lr[ok], color="tab:orange", marker=_figure.marker(int(ok.sum())))
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        drawn.append((position[ok], lr[ok]))
    else:
        _figure.no_data(ax, "no learning rate logged yet")
    ax.set(title="Learning rate (per logged step)", ylabel="lr")
    ax.grid(alpha=0.3)

    if has_knn:
        ax = axes[2]
        knn = metrics["knn_top1"]
        ok = np.isfinite(position) & np.isfinite(knn)
        ax.plot(position[ok], knn[ok], color="tab:green", marker="o", label="kNN top-1")
        drawn.append((position[ok], knn[ok]))
        ax.set(title="kNN top-1 (test)", ylabel="accuracy (%)")
        _figure.style_panel(ax, "knn_top1", drawn[-1:], num_classes, accuracy_ylim)
        ax.legend()
        ax.grid(alpha=0.3)
    _figure.epoch_axes(axes, drawn)
    figure.tight_layout()
    return figure


def plot_pretrain_curves(
    metrics_csv: str | Path,
    out_png: str | Path,
    *,
    num_classes: int | None = None,
    accuracy_ylim: str = "full",
) -> Path:
    """Draw a run's metrics.csv: loss, lr and (when measured) knn_top1, all against epochs.

    Rows are logged steps with columns step, epoch, loss, lr (required) and optionally
    knn_top1 (empty on rows where it was not measured); `epoch` is the fractional progress
    in epochs (pretrain's global_step / steps_per_epoch), the rows in (e - 1, e] make epoch
    e, whose mean loss is drawn at e. Works on a file with only the header or a few rows
    (the empty panels say so), so it can be refreshed from the first epoch on.

    Args:
        metrics_csv: the run's metrics.csv.
        out_png: where to write the PNG.
        num_classes: classes of the dataset, for the kNN panel's chance line (100 / C %); None
            reads it from the run folder holding metrics_csv (`run_num_classes`), and draws no
            line when the folder does not say.
        accuracy_ylim: "full" (kNN panel on 0-100 %) or "auto" (zoomed on the values).

    Returns:
        the PNG path written.
    """
    metrics_csv = Path(metrics_csv)
    _figure.check_accuracy_ylim(accuracy_ylim)
    _figure.check_num_classes(num_classes)
    metrics = _read_metrics(metrics_csv)
    if num_classes is None:
        num_classes = run_num_classes(metrics_csv.parent)
    figure = _pretrain_figure(metrics, num_classes=num_classes, accuracy_ylim=accuracy_ylim)
    return _figure.save_png(figure, out_png)


# ---------------------------------------------------------------------------------------------
# Per-epoch histories: one run (probe curves) and several runs (compare)


def _as_history(run: History | str | Path, name: str) -> list[Mapping[str, float]]:
    if isinstance(run, str | Path):
        path = Path(run)
        return read_history_csv(path / HISTORY_FILE if path.is_dir() else path)
    if isinstance(run, Sequence) and all(isinstance(record, Mapping) for record in run):
        return list(run)
    raise ValueError(
        f"{name} must be a list of per-epoch dicts, a history CSV path or a folder holding "
        f"{HISTORY_FILE}, got {type(run).__name__}"
    )


def _series(history: Sequence[Mapping[str, float]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) of one metric; rows without it (or with nan) are dropped."""
    epochs, values = [], []
    for index, record in enumerate(history, start=1):
        value = record.get(key)
        if value is not None and math.isfinite(float(value)):
            epochs.append(float(record.get("epoch", index)))
            values.append(float(value))
    return np.asarray(epochs), np.asarray(values)


def _probe_figure(
    history: Sequence[Mapping[str, float]],
    title: str,
    *,
    num_classes: int | None = None,
    accuracy_ylim: str = "full",
) -> Figure:
    figure = Figure(figsize=(10.0, 4.0))
    loss_ax, acc_ax = figure.subplots(1, 2, sharex=True)
    panels: dict[str, list[_figure.Series]] = {"loss": [], "val_top1": []}
    for key, label, style in (("train_loss", "train", "--"), ("val_loss", "validation", "-")):
        x, y = _series(history, key)
        if x.size:
            loss_ax.plot(x, y, style, marker=_figure.marker(x.size), label=label)
            panels["loss"].append((x, y))
    for key, label in (("val_top1", "top-1"), ("val_top5", "top-5")):
        x, y = _series(history, key)
        if x.size:
            acc_ax.plot(x, y, marker=_figure.marker(x.size), label=f"validation {label}")
            panels["val_top1"].append((x, y))
    for ax, metric, name, unit in (
        (loss_ax, "loss", "Loss", "loss"),
        (acc_ax, "val_top1", "Accuracy", "accuracy (%)"),  # the chance line is top-1's
    ):
        series = panels[metric]
        ax.set(title=f"{title}: {name.lower()}", ylabel=unit)
        ax.grid(alpha=0.3)
        if series:
            _figure.style_panel(ax, metric, series, num_classes, accuracy_ylim)
            ax.legend()
        else:
            _figure.no_data(ax, "no values")
    _figure.epoch_axes([loss_ax, acc_ax], panels["loss"] + panels["val_top1"])
    figure.tight_layout()
    return figure


def plot_probe_curves(
    history: History | str | Path,
    out_png: str | Path,
    *,
    title: str = "Linear probe",
    num_classes: int | None = None,
    accuracy_ylim: str = "full",
) -> Path:
    """Loss (train and validation) and validation top-1/top-5 per epoch of one training run.

    Args:
        history: per-epoch dicts with epoch, train_loss, val_loss, val_top1, val_top5 (e.g.
            LinearProbeResult.history; missing keys are left out), or a CSV of them, or a
            folder holding history.csv.
        out_png: where to write the PNG.
        title: prefix of the panel titles.
        num_classes: classes of the validation data: the accuracy panel's dashed chance line
            at 100 / num_classes % (top-1); None draws none.
        accuracy_ylim: "full" (accuracy on 0-100 %) or "auto" (zoomed on the values).

    Returns:
        the PNG path written.
    """
    _figure.check_accuracy_ylim(accuracy_ylim)
    _figure.check_num_classes(num_classes)
    records = _as_history(history, "history")
    if not records:
        raise ValueError("history is empty; nothing to plot")
    figure = _probe_figure(records, title, num_classes=num_classes, accuracy_ylim=accuracy_ylim)
    return _figure.save_png(figure, out_png)


_METRIC_LABELS = {
    "val_top1": "validation top-1 (%)",
    "val_top5": "validation top-5 (%)",
    "val_loss": "validation loss",
    "train_loss": "train loss",
    "train_top1": "train top-1 (%)",
}


def _compare_figure(
    runs: Mapping[str, Sequence[Mapping[str, float]]],
    metrics: Sequence[str],
    title: str,
    *,
    num_classes: int | None = None,
    accuracy_ylim: str = "full",
) -> Figure:
    figure = Figure(figsize=(5.0 * len(metrics), 4.0))
    axes = figure.subplots(1, len(metrics), squeeze=False, sharex=True)[0]
    drawn: list[_figure.Series] = []
    for ax, metric in zip(axes, metrics, strict=True):
        panel = []
        for colour, (label, history) in enumerate(runs.items()):
            x, y = _series(history, metric)
            ax.plot(x, y, color=f"C{colour % 10}", marker=_figure.marker(x.size), label=label)
            panel.append((x, y))
        name = _METRIC_LABELS.get(metric, metric)
        ax.set(title=name, ylabel=name)
        _figure.style_panel(ax, metric, panel, num_classes, accuracy_ylim)
        ax.grid(alpha=0.3)
        ax.legend()
        drawn += panel
    _figure.epoch_axes(axes, drawn)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_compare(
    runs: Mapping[str, History | str | Path],
    out_png: str | Path,
    *,
    metrics: Sequence[str] = ("val_top1", "val_loss"),
    title: str = "Runs compared",
    num_classes: int | None = None,
    accuracy_ylim: str = "full",
) -> Path:
    """Overlay several runs' per-epoch curves: one panel per metric, one line per run.

    Accuracy panels (a metric naming top-k or accuracy, in percent) get the chance level of
    top-k and a 0-100 axis; loss panels clip a first-epoch outlier (their title says so).

    Args:
        runs: legend label -> per-epoch dicts, a history CSV, or a folder holding history.csv.
        out_png: where to write the PNG.
        metrics: history keys to draw, one panel each (default validation top-1 and loss).
        title: the figure title.
        num_classes: classes of the data the runs are validated on, for the chance line
            (100 x min(k, C) / C % for top-k); None draws none.
        accuracy_ylim: "full" (accuracy panels on 0-100 %) or "auto" (zoomed on the values).

    Returns:
        the PNG path written.
    """
    _figure.check_accuracy_ylim(accuracy_ylim)
    _figure.check_num_classes(num_classes)
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError(f"runs must be a non-empty mapping of label -> history, got {runs!r}")
    if isinstance(metrics, str) or not metrics:
        raise ValueError(f"metrics must be a non-empty sequence of history keys, got {metrics!r}")
    histories = {str(label): _as_history(run, f"runs[{label!r}]") for label, run in runs.items()}
    for label, history in histories.items():
        for metric in metrics:
            if not _series(history, metric)[0].size:
                keys = sorted({key for record in history for key in record})
                raise ValueError(f"run {label!r} has no values for {metric!r}; its keys are {keys}")
    figure = _compare_figure(
        histories, metrics, title, num_classes=num_classes, accuracy_ylim=accuracy_ylim
    )
    return _figure.save_png(figure, out_png)
