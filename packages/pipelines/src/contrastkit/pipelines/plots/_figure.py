"""What every run picture shares: the resolution, the atomic save, the empty-panel note, markers,
and the axes rules: one epoch x axis per figure with integer ticks, accuracy panels on 0-100 with
the chance level, loss panels that a first-epoch outlier cannot flatten.

Pictures are drawn on matplotlib Figure objects with the Agg canvas (no pyplot, no global backend
switch) and saved through `contrastkit.pipelines.atomic`, so a reader never sees a half-written PNG.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from contrastkit.pipelines.atomic import atomic_write

DPI = 120
# accuracy_ylim values: "full" draws accuracy panels on 0-100 %, "auto" zooms on the data.
ACCURACY_YLIMS: tuple[str, ...] = ("full", "auto")
CHANCE_GID = "chance"  # the gid of every chance line, so a reader of the figure can tell it apart
# A first-epoch value is an outlier when it lies above the later epochs' top by more than
# max(OUTLIER_SPANS x the later epochs' range, |their top|): e.g. 20.7 above later values of 1-2.
OUTLIER_SPANS = 3.0

Series = tuple[np.ndarray, np.ndarray]  # (x in epochs, values), both (N,)


def save_png(figure: Figure, out_png: str | Path) -> Path:
    """Write `figure` as a PNG at `out_png` (its folder is created), atomically; returns the path."""
    return atomic_write(
        out_png, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    )


def no_data(axes: Any, message: str) -> None:
    """Write `message` in grey in the middle of an empty panel."""
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes, color="grey")


def marker(count: int) -> str | None:
    # Markers make short curves (a few epochs, or the single closed-form point) visible.
    return "o" if count <= 30 else None


def check_accuracy_ylim(accuracy_ylim: str) -> str:
    """`accuracy_ylim` if it is one of ACCURACY_YLIMS, else ValueError naming the choices."""
    if accuracy_ylim not in ACCURACY_YLIMS:
        raise ValueError(
            f"accuracy_ylim must be one of {list(ACCURACY_YLIMS)} ('full': 0-100 %, 'auto': "
            f"zoom on the data), got {accuracy_ylim!r}"
        )
    return accuracy_ylim


def check_num_classes(num_classes: int | None) -> int | None:
    """None (no chance line) or an int >= 2, else ValueError."""
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be None or an int >= 2, got {num_classes!r}")
    return num_classes


def epoch_axes(axes: Sequence[Any], series: Sequence[Series]) -> None:
    """Give the panels of one figure the same epoch x axis: from 0 to the last epoch with data
    (plus a small margin so end markers show whole), integer ticks, labelled "epoch".

    The panels must share x (`figure.subplots(..., sharex=True)`); `series` are every panel's
    (x, y) data, x in epochs (fractional positions of logged steps are fine).
    """
    finite = [x[np.isfinite(x)] for x, _ in series]
    last = max((float(x.max()) for x in finite if x.size), default=1.0)
    last = max(1.0, math.ceil(last - 1e-9))
    for ax in axes:
        ax.set_xlim(0.0, last * 1.03)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")


def accuracy_top_k(metric: str) -> int | None:
    """k of a top-k accuracy metric name (val_top1, knn_top5, "top-1 accuracy (%)"; 1 for a
    plain "accuracy"), None for anything else."""
    found = re.search(r"top[-_ ]?(\d+)", metric.lower())
    if found:
        return int(found.group(1))
    return 1 if "accuracy" in metric.lower() else None


def is_loss(metric: str) -> bool:
    """A loss panel (train_loss, val_loss, "cross-entropy loss"): robust to first-epoch outliers."""
    return "loss" in metric.lower()


def accuracy_axis(ax: Any, num_classes: int | None, top_k: int, accuracy_ylim: str) -> None:
    """An accuracy panel (percent): the chance level of top-`top_k` over `num_classes` classes as
    a dashed grey line (none when num_classes is None) and a 0-100 y axis when accuracy_ylim is
    "full"; with "auto" the y axis stays zoomed on the data (a chance line outside it is off view).
    Call after the curves are drawn."""
    limits = ax.get_ylim()  # the data's own range, before the chance line can widen it
    if num_classes is not None:
        chance = 100.0 * min(top_k, num_classes) / num_classes
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1.0, gid=CHANCE_GID,
                   label=f"chance ({chance:.3g} %)")  # fmt: skip
    if accuracy_ylim == "full":
        ax.set_ylim(0.0, 100.0)
        for line in ax.get_lines():
            line.set_clip_on(False)  # a marker at exactly 100 % shows whole, not cut in half
    else:
        ax.set_ylim(limits)


def clip_first_epoch_outliers(ax: Any, series: Sequence[Series]) -> float | None:
    """Keep a first-epoch outlier from flattening a loss panel.

    The first epoch is the first whole epoch holding values (x <= ceil(min x)). When its largest
    value lies above the later values' maximum `top` by more than max(OUTLIER_SPANS x the later
    range, |top|), the y axis is set to the range of all values below that, plus a 5 % margin,
    and the panel title says "(first-epoch values above Y clipped)". Call after the title is set.

    Returns:
        Y, the upper y limit, when values were clipped; None when the axis was left alone.
    """
    xs = np.concatenate([np.asarray(x, np.float64) for x, _ in series] or [np.empty(0)])
    ys = np.concatenate([np.asarray(y, np.float64) for _, y in series] or [np.empty(0)])
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    if not xs.size:
        return None
    first = math.ceil(float(xs.min()) - 1e-9)
    early, later = ys[xs <= first + 1e-9], ys[xs > first + 1e-9]
    if not early.size or not later.size:
        return None
    top, bottom = float(later.max()), float(ys.min())
    if float(early.max()) <= top + max(OUTLIER_SPANS * (top - bottom), abs(top)):
        return None
    margin = 0.05 * (top - bottom) if top > bottom else 0.05 * max(abs(top), 1e-12)
    upper = top + margin
    ax.set_ylim(bottom - margin, upper)
    ax.set_title(f"{ax.get_title()}\n(first-epoch values above {upper:.3g} clipped)")
    return upper


def style_panel(
    ax: Any, metric: str, series: Sequence[Series], num_classes: int | None, accuracy_ylim: str
) -> None:
    """Apply the panel rule of `metric`, after its curves (`series`) are drawn and titled:
    accuracy panels get `accuracy_axis`, loss panels `clip_first_epoch_outliers`."""
    top_k = accuracy_top_k(metric)
    if top_k is not None:
        accuracy_axis(ax, num_classes, top_k, accuracy_ylim)
    elif is_loss(metric):
        clip_first_epoch_outliers(ax, series)
