"""What every run picture shares: the resolution, the atomic save, the empty-panel note and markers.

Pictures are drawn on matplotlib Figure objects with the Agg canvas (no pyplot, no global backend
switch) and saved through `contrastkit.pipelines.atomic`, so a reader never sees a half-written PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from contrastkit.pipelines.atomic import atomic_write

DPI = 120


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
