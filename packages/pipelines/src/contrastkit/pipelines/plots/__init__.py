"""The run pictures: pretraining curves, probe curves, run comparison, t-SNE and the nearest-neighbour grid.

training_curves.py draws the curves, representation.py the t-SNE scatter and the neighbour grid;
_figure.py holds what they share (resolution, atomic PNG save, the epoch / accuracy / loss axes
rules), chance.py how many classes a run folder has (the accuracy panels' chance level).
Importing this package imports matplotlib, so the training code imports it only where it draws.
"""

from __future__ import annotations

from contrastkit.pipelines.plots.representation import plot_nn_grid, plot_tsne
from contrastkit.pipelines.plots.training_curves import (
    plot_compare,
    plot_pretrain_curves,
    plot_probe_curves,
)

__all__ = [
    "plot_compare",
    "plot_nn_grid",
    "plot_pretrain_curves",
    "plot_probe_curves",
    "plot_tsne",
]
