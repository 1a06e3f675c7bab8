"""The run pictures: pretraining curves, probe curves, run comparison, t-SNE and the nearest-neighbour grid.

Drawn on matplotlib Figure objects with the Agg canvas (no pyplot, no global backend switch); every PNG
is written to a temporary file in the target folder and renamed, so a reader never sees a half-written one.
"""

from __future__ import annotations

import csv
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from contrastkit.pipelines.evaluation.inputs import check_labels
from contrastkit.pipelines.evaluation.report import read_history_csv
from contrastkit.pipelines.evaluation.tsne import TsneEmbedding, tsne_embedding

DPI = 120
SAME_CLASS_COLOUR = "#1a9641"  # green border: neighbour of the query's class
OTHER_CLASS_COLOUR = "#d7191c"  # red border: neighbour of another class
QUERY_COLOUR = "#2b2b2b"

History = Sequence[Mapping[str, float]]


def _save_atomically(figure: Figure, out_png: str | Path) -> Path:
    path = Path(out_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A hidden, unique name in the same folder (so os.replace is an atomic rename); created by
    # savefig itself, so it gets the usual umask permissions, unlike a mkstemp file (0600).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        figure.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _no_data(axes: Any, message: str) -> None:
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes, color="grey")


def _marker(count: int) -> str | None:
    # Markers make short curves (a few epochs, or the single closed-form point) visible.
    return "o" if count <= 30 else None


# ---------------------------------------------------------------------------------------------
# Pretraining curves from metrics.csv


def _read_metrics(metrics_csv: Path) -> dict[str, np.ndarray]:
    if not metrics_csv.is_file():
        raise FileNotFoundError(f"metrics file not found: {metrics_csv}")
    with metrics_csv.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
        header = list(reader.fieldnames or [])
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


def _pretrain_figure(metrics: Mapping[str, np.ndarray]) -> Figure:
    has_knn = "knn_top1" in metrics and bool(np.isfinite(metrics["knn_top1"]).any())
    figure = Figure(figsize=(5.0 * (3 if has_knn else 2), 4.0))
    axes = figure.subplots(1, 3 if has_knn else 2, squeeze=False)[0]
    step, loss, lr = (metrics[name] for name in ("step", "loss", "lr"))
    position = _epoch_positions(metrics["epoch"])

    ax = axes[0]
    ok = np.isfinite(position) & np.isfinite(loss)
    if ok.any():
        ax.plot(position[ok], loss[ok], color="tab:blue", alpha=0.35, linewidth=0.8,
                label="logged steps")  # fmt: skip
        # Epoch e holds the rows logged in (e - 1, e]; its mean is drawn at its end, e.
        epoch_index = np.ceil(position[ok] - 1e-9)
        ends = np.unique(epoch_index)
        means = [loss[ok][epoch_index == end].mean() for end in ends]
        ax.plot(ends, means, color="tab:blue", marker=_marker(ends.size), label="epoch mean")
        ax.legend()
    else:
        _no_data(ax, "no loss logged yet")
    ax.set(title="Training loss", xlabel="epoch", ylabel="loss")
    ax.grid(alpha=0.3)

    ax = axes[1]
    ok = np.isfinite(step) & np.isfinite(lr)
    if ok.any():
        ax.plot(step[ok], lr[ok], color="tab:orange", marker=_marker(int(ok.sum())))
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    else:
        _no_data(ax, "no learning rate logged yet")
    ax.set(title="Learning rate", xlabel="step", ylabel="lr")
    ax.grid(alpha=0.3)

    if has_knn:
        ax = axes[2]
        knn = metrics["knn_top1"]
        ok = np.isfinite(position) & np.isfinite(knn)
        ax.plot(position[ok], knn[ok], color="tab:green", marker="o")
        ax.set(title="kNN top-1 (test)", xlabel="epoch", ylabel="accuracy (%)")
        ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def plot_pretrain_curves(metrics_csv: str | Path, out_png: str | Path) -> Path:
    """Draw a run's metrics.csv: loss vs epoch, lr vs step, and knn_top1 vs epoch when measured.

    Rows are logged steps with columns step, epoch, loss, lr (required) and optionally
    knn_top1 (empty on rows where it was not measured); `epoch` is the fractional progress
    in epochs (pretrain's global_step / steps_per_epoch), the rows in (e - 1, e] make epoch
    e, whose mean loss is drawn at e. Works on a file with only the header or a few rows
    (the empty panels say so), so it can be refreshed from the first epoch on.

    Returns:
        the PNG path written.
    """
    return _save_atomically(_pretrain_figure(_read_metrics(Path(metrics_csv))), out_png)


# ---------------------------------------------------------------------------------------------
# Per-epoch histories: one run (probe curves) and several runs (compare)


def _as_history(run: History | str | Path, name: str) -> list[Mapping[str, float]]:
    if isinstance(run, str | Path):
        path = Path(run)
        return read_history_csv(path / "history.csv" if path.is_dir() else path)
    if isinstance(run, Sequence) and all(isinstance(record, Mapping) for record in run):
        return list(run)
    raise ValueError(
        f"{name} must be a list of per-epoch dicts, a history CSV path or a folder holding "
        f"history.csv, got {type(run).__name__}"
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


def _probe_figure(history: Sequence[Mapping[str, float]], title: str) -> Figure:
    figure = Figure(figsize=(10.0, 4.0))
    loss_ax, acc_ax = figure.subplots(1, 2)
    for key, label, style in (("train_loss", "train", "--"), ("val_loss", "validation", "-")):
        x, y = _series(history, key)
        if x.size:
            loss_ax.plot(x, y, style, marker=_marker(x.size), label=label)
    for key, label in (("val_top1", "top-1"), ("val_top5", "top-5")):
        x, y = _series(history, key)
        if x.size:
            acc_ax.plot(x, y, marker=_marker(x.size), label=f"validation {label}")
    for ax, name, unit in ((loss_ax, "Loss", "loss"), (acc_ax, "Accuracy", "accuracy (%)")):
        ax.set(title=f"{title}: {name.lower()}", xlabel="epoch", ylabel=unit)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend()
        else:
            _no_data(ax, "no values")
    figure.tight_layout()
    return figure


def plot_probe_curves(
    history: History | str | Path, out_png: str | Path, *, title: str = "Linear probe"
) -> Path:
    """Loss (train and validation) and validation top-1/top-5 per epoch of one training run.

    Args:
        history: per-epoch dicts with epoch, train_loss, val_loss, val_top1, val_top5 (e.g.
            LinearProbeResult.history; missing keys are left out), or a CSV of them, or a
            folder holding history.csv.
        out_png: where to write the PNG.
        title: prefix of the panel titles.

    Returns:
        the PNG path written.
    """
    records = _as_history(history, "history")
    if not records:
        raise ValueError("history is empty; nothing to plot")
    return _save_atomically(_probe_figure(records, title), out_png)


_METRIC_LABELS = {
    "val_top1": "validation top-1 (%)",
    "val_top5": "validation top-5 (%)",
    "val_loss": "validation loss",
    "train_loss": "train loss",
    "train_top1": "train top-1 (%)",
}


def _compare_figure(
    runs: Mapping[str, Sequence[Mapping[str, float]]], metrics: Sequence[str], title: str
) -> Figure:
    figure = Figure(figsize=(5.0 * len(metrics), 4.0))
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        for colour, (label, history) in enumerate(runs.items()):
            x, y = _series(history, metric)
            ax.plot(x, y, color=f"C{colour % 10}", marker=_marker(x.size), label=label)
        name = _METRIC_LABELS.get(metric, metric)
        ax.set(title=name, xlabel="epoch", ylabel=name)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_compare(
    runs: Mapping[str, History | str | Path],
    out_png: str | Path,
    *,
    metrics: Sequence[str] = ("val_top1", "val_loss"),
    title: str = "Runs compared",
) -> Path:
    """Overlay several runs' per-epoch curves: one panel per metric, one line per run.

    Args:
        runs: legend label -> per-epoch dicts, a history CSV, or a folder holding history.csv.
        out_png: where to write the PNG.
        metrics: history keys to draw, one panel each (default validation top-1 and loss).
        title: the figure title.

    Returns:
        the PNG path written.
    """
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
    return _save_atomically(_compare_figure(histories, metrics, title), out_png)


# ---------------------------------------------------------------------------------------------
# t-SNE


def _class_names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [f"class {i}" for i in range(num_classes)]
    names = list(class_names)
    if len(names) < num_classes:
        raise ValueError(
            f"class_names has {len(names)} names but the labels go up to {num_classes - 1}"
        )
    return names


def _tsne_figure(embedding: TsneEmbedding, names: Sequence[str]) -> Figure:
    figure = Figure(figsize=(8.0, 7.0))
    ax = figure.subplots()
    classes = np.unique(embedding.labels)
    colours = "tab10" if classes.size <= 10 else "tab20"
    cmap = matplotlib.colormaps[colours]
    for order, cls in enumerate(classes):
        mask = embedding.labels == cls
        ax.scatter(
            embedding.points[mask, 0],
            embedding.points[mask, 1],
            s=6,
            alpha=0.8,
            color=cmap(order % cmap.N),
            label=names[int(cls)],
        )
    ax.set(title=f"t-SNE of {embedding.points.shape[0]} samples", xticks=[], yticks=[])
    ax.legend(markerscale=3, fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    return figure


def plot_tsne(
    features: Tensor,
    labels: Tensor,
    class_names: Sequence[str] | None,
    out_png: str | Path,
    *,
    max_points: int = 5000,
    seed: int = 0,
    perplexity: float = 30.0,
) -> TsneEmbedding:
    """t-SNE scatter of (a seeded class-stratified sample of) features, coloured by class.

    Args:
        features: (N, D) float features.
        labels: (N,) integer classes.
        class_names: legend name of each class index (None: "class i").
        out_png: where to write the PNG.
        max_points, seed, perplexity: as in `tsne_embedding` (L2-normalised features).

    Returns:
        the TsneEmbedding drawn: points (M, 2), indices (M,) into `features`, labels (M,).
    """
    # Names are checked against every label before the slow part; tsne_embedding checks the rest.
    num_classes = int(labels.max()) + 1 if isinstance(labels, Tensor) and labels.numel() else 1
    names = _class_names(class_names, num_classes)
    embedding = tsne_embedding(
        features, labels, max_points=max_points, seed=seed, perplexity=perplexity
    )
    _save_atomically(_tsne_figure(embedding, names), out_png)
    return embedding


# ---------------------------------------------------------------------------------------------
# Nearest-neighbour grid


def _check_images(name: str, images: Tensor) -> None:
    if not isinstance(images, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim == 2:
        raise ValueError(
            f"{name} has shape {tuple(images.shape)}: tabular rows cannot be drawn; "
            "nearest-neighbour grids need (N, C, H, W) uint8 images"
        )
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.dtype != torch.uint8:
        raise ValueError(
            f"{name} must be uint8 images of shape (N, C, H, W) with C in (1, 3), "
            f"got shape {tuple(images.shape)} and dtype {images.dtype}"
        )


def _as_hwc(image: Tensor) -> np.ndarray:
    array = image.permute(1, 2, 0).cpu().numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array


def _nn_grid_figure(
    query_images: Tensor,
    query_labels: Tensor,
    train_images: Tensor,
    train_labels: Tensor,
    neighbour_indices: Tensor,
    names: Sequence[str],
) -> Figure:
    rows, k = neighbour_indices.shape
    figure = Figure(figsize=(1.1 * (k + 1), 1.25 * rows))
    axes = figure.subplots(rows, k + 1, squeeze=False)
    query_labels = query_labels.cpu().tolist()
    neighbours = neighbour_indices.cpu()
    neighbour_labels = train_labels.cpu()[neighbours].tolist()
    for row in range(rows):
        cells = [(query_images[row], query_labels[row], QUERY_COLOUR, "query")]
        for col in range(k):
            label = neighbour_labels[row][col]
            colour = SAME_CLASS_COLOUR if label == query_labels[row] else OTHER_CLASS_COLOUR
            cells.append((train_images[int(neighbours[row, col])], label, colour, f"NN {col + 1}"))
        for col, (image, label, colour, heading) in enumerate(cells):
            ax = axes[row, col]
            ax.imshow(_as_hwc(image), cmap="gray" if image.shape[0] == 1 else None,
                      vmin=0, vmax=255, interpolation="nearest")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3.0 if col else 1.5)
            ax.set_title(names[label], fontsize=7, color=colour if col else "black", pad=2)
            if row == 0:
                ax.text(0.5, 1.35, heading, ha="center", va="bottom", fontsize=8,
                        fontweight="bold", transform=ax.transAxes)  # fmt: skip
    figure.subplots_adjust(wspace=0.08, hspace=0.35)
    return figure


def plot_nn_grid(
    query_images: Tensor,
    query_labels: Tensor,
    train_images: Tensor,
    train_labels: Tensor,
    neighbour_indices: Tensor,
    out_png: str | Path,
    class_names: Sequence[str] | None = None,
) -> Path:
    """One row per query: the query image, then its neighbours framed green (same class) or red.

    Args:
        query_images: (Nq, C, H, W) uint8 images, C in (1, 3); tabular (2-D) inputs raise.
        query_labels: (Nq,) integer classes.
        train_images: (N, C', H', W') uint8 images the neighbours index into.
        train_labels: (N,) integer classes.
        neighbour_indices: (Nq, k) int indices into the train set, e.g. from
            `nearest_neighbours(query_features, train_features, k=8)`.
        out_png: where to write the PNG.
        class_names: names shown above each image (None: "class i").

    Returns:
        the PNG path written.
    """
    _check_images("query_images", query_images)
    _check_images("train_images", train_images)
    if not isinstance(neighbour_indices, Tensor) or neighbour_indices.ndim != 2:
        shape = (
            tuple(neighbour_indices.shape)
            if isinstance(neighbour_indices, Tensor)
            else type(neighbour_indices).__name__
        )
        raise ValueError(f"neighbour_indices must be an (Nq, k) tensor, got {shape}")
    rows, k = neighbour_indices.shape
    if rows != query_images.shape[0] or rows == 0 or k == 0:
        raise ValueError(
            f"neighbour_indices has shape {(rows, k)}; it needs one non-empty row per query "
            f"image ({query_images.shape[0]})"
        )
    if neighbour_indices.dtype.is_floating_point or neighbour_indices.dtype == torch.bool:
        raise ValueError(f"neighbour_indices must be integers, got dtype {neighbour_indices.dtype}")
    if int(neighbour_indices.min()) < 0 or int(neighbour_indices.max()) >= train_images.shape[0]:
        raise ValueError(
            f"neighbour_indices must lie in [0, {train_images.shape[0]}) (train images), got "
            f"[{int(neighbour_indices.min())}, {int(neighbour_indices.max())}]"
        )
    num_classes = 1 + max(
        int(query_labels.max()) if isinstance(query_labels, Tensor) and query_labels.numel() else 0,
        int(train_labels.max()) if isinstance(train_labels, Tensor) and train_labels.numel() else 0,
    )
    check_labels("query_labels", query_labels, rows, num_classes)
    check_labels("train_labels", train_labels, train_images.shape[0], num_classes)
    names = _class_names(class_names, num_classes)
    figure = _nn_grid_figure(
        query_images, query_labels, train_images, train_labels, neighbour_indices, names
    )
    return _save_atomically(figure, out_png)
