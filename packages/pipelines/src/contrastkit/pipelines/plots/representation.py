"""Pictures of a representation: the t-SNE scatter of an embedding computed by
`contrastkit.pipelines.evaluation.tsne.tsne_embedding`, and the nearest-neighbour image grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from contrastkit.pipelines.evaluation.inputs import check_labels
from contrastkit.pipelines.evaluation.tsne import TsneEmbedding
from contrastkit.pipelines.plots import _figure

SAME_CLASS_COLOUR = "#1a9641"  # green border: neighbour of the query's class
OTHER_CLASS_COLOUR = "#d7191c"  # red border: neighbour of another class
QUERY_COLOUR = "#2b2b2b"


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
    embedding: TsneEmbedding, class_names: Sequence[str] | None, out_png: str | Path
) -> Path:
    """Scatter of a t-SNE embedding, coloured by class.

    Args:
        embedding: from `contrastkit.pipelines.evaluation.tsne.tsne_embedding`: points (M, 2),
            labels (M,) integer classes (indices (M,) are not needed to draw).
        class_names: legend name of each class index (None: "class i").
        out_png: where to write the PNG.

    Returns:
        the PNG path written.
    """
    if not isinstance(embedding, TsneEmbedding):
        raise ValueError(
            f"embedding must be a TsneEmbedding (see tsne_embedding), got {type(embedding).__name__}"
        )
    points = np.asarray(embedding.points)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"embedding.points must have shape (M, 2), got {points.shape}")
    labels = torch.as_tensor(np.asarray(embedding.labels))
    num_classes = int(labels.max()) + 1 if labels.numel() else 1
    check_labels("embedding.labels", labels, points.shape[0], num_classes)
    names = _class_names(class_names, num_classes)
    return _figure.save_png(_tsne_figure(embedding, names), out_png)


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
    return _figure.save_png(figure, out_png)
