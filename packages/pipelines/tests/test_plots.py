"""Every picture is written as a valid, non-empty PNG, and what it draws is checked against its data."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import matplotlib.colors
import numpy as np
import pytest
import torch
import yaml
from matplotlib.figure import Figure

from contrastkit.pipelines.evaluation.knn import nearest_neighbours
from contrastkit.pipelines.evaluation.linear_probe import train_linear_probe
from contrastkit.pipelines.evaluation.results import write_history_csv
from contrastkit.pipelines.evaluation.tsne import _stratified_sample, tsne_embedding
from contrastkit.pipelines.plots import (
    _figure,
    plot_compare,
    plot_nn_grid,
    plot_pretrain_curves,
    plot_probe_curves,
    plot_tsne,
    representation,
    training_curves,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def one_openmp_thread():
    """t-SNE of ~100 points: OpenMP start-up and spin-waits cost more than the work, and on a
    busy 2-core machine turn 0.5 s into 10+ s; one thread gives the same result quickly."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def assert_png(path: Path, min_width: int = 300, min_height: int = 200) -> None:
    """A real PNG: the signature, an IHDR chunk with a sensible size, more than a few bytes."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= min_width and height >= min_height
    assert len(data) > 5_000
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


def _write_metrics(path: Path, rows: list[dict[str, object]], header: list[str]) -> Path:
    lines = [",".join(header)]
    lines += [",".join("" if row.get(k) is None else str(row[k]) for k in header) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _pretrain_rows(epochs: int = 3, steps_per_epoch: int = 4) -> list[dict[str, object]]:
    rows = []
    for step in range(1, epochs * steps_per_epoch + 1):
        end_of_epoch = step % steps_per_epoch == 0
        rows.append(
            {
                "step": step,
                "epoch": round(step / steps_per_epoch, 6),
                "loss": 5.0 / step,
                "lr": 0.1 * math.cos(step / 20),
                "knn_top1": 10.0 * step / steps_per_epoch if end_of_epoch else None,
            }
        )
    return rows


def test_pretrain_curves_draw_loss_epoch_means_lr_and_knn(tmp_path):
    rows = _pretrain_rows()
    csv_path = _write_metrics(
        tmp_path / "metrics.csv", rows, ["step", "epoch", "loss", "lr", "knn_top1"]
    )
    assert plot_pretrain_curves(csv_path, tmp_path / "curves.png") == tmp_path / "curves.png"
    assert_png(tmp_path / "curves.png")

    figure = training_curves._pretrain_figure(training_curves._read_metrics(csv_path))
    loss_ax, lr_ax, knn_ax = figure.axes
    per_step, epoch_mean = loss_ax.get_lines()
    np.testing.assert_allclose(per_step.get_ydata(), [r["loss"] for r in rows])
    # Epoch e = rows with epoch in (e - 1, e], i.e. steps 4e-3 .. 4e; mean drawn at x = e.
    np.testing.assert_allclose(epoch_mean.get_xdata(), [1, 2, 3])
    expected_means = [np.mean([5.0 / s for s in range(4 * e - 3, 4 * e + 1)]) for e in (1, 2, 3)]
    np.testing.assert_allclose(epoch_mean.get_ydata(), expected_means)
    # lr against epochs too: step s of 4 per epoch sits at s / 4.
    np.testing.assert_allclose(lr_ax.get_lines()[0].get_xdata(), np.arange(1, 13) / 4)
    np.testing.assert_allclose(lr_ax.get_lines()[0].get_ydata(), [r["lr"] for r in rows])
    np.testing.assert_allclose(knn_ax.get_lines()[0].get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(knn_ax.get_lines()[0].get_ydata(), [10, 20, 30])


def test_pretrain_curves_survive_few_rows_no_knn_column_and_only_a_header(tmp_path):
    header = ["step", "epoch", "loss", "lr"]
    two_rows = _write_metrics(tmp_path / "two.csv", _pretrain_rows()[:2], header)
    plot_pretrain_curves(two_rows, tmp_path / "two.png")
    assert_png(tmp_path / "two.png")
    assert len(training_curves._pretrain_figure(training_curves._read_metrics(two_rows)).axes) == 2

    empty = _write_metrics(tmp_path / "empty.csv", [], [*header, "knn_top1"])
    plot_pretrain_curves(empty, tmp_path / "empty.png")
    assert_png(tmp_path / "empty.png")

    # knn column present but never measured yet: no kNN panel.
    unmeasured = _write_metrics(
        tmp_path / "unmeasured.csv",
        [{**r, "knn_top1": None} for r in _pretrain_rows()],
        [*header, "knn_top1"],
    )
    assert (
        len(training_curves._pretrain_figure(training_curves._read_metrics(unmeasured)).axes) == 2
    )


def test_integer_epoch_index_rows_are_spread_over_their_epoch():
    positions = training_curves._epoch_positions(np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=float))
    np.testing.assert_allclose(positions, [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])


def test_pretrain_curves_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics file not found"):
        plot_pretrain_curves(tmp_path / "missing.csv", tmp_path / "x.png")
    bad = _write_metrics(tmp_path / "bad.csv", [], ["step", "loss"])
    with pytest.raises(ValueError, match=r"lacks columns \['epoch', 'lr'\]"):
        plot_pretrain_curves(bad, tmp_path / "x.png")


def _history(seed: int = 0, epochs: int = 6):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 5, generator=generator) * 2
    labels = torch.arange(150) % 3
    features = centres[labels] + torch.randn(150, 5, generator=generator)
    result = train_linear_probe(
        features[:100], labels[:100], features[100:], labels[100:], 3, epochs=epochs, seed=seed
    )
    return result.history


def test_probe_curves_draw_the_history(tmp_path):
    history = _history()
    plot_probe_curves(history, tmp_path / "probe_curves.png")
    assert_png(tmp_path / "probe_curves.png")

    loss_ax, acc_ax = training_curves._probe_figure(history, "Linear probe").axes
    lines = {line.get_label(): line for line in loss_ax.get_lines() + acc_ax.get_lines()}
    assert set(lines) == {"train", "validation", "validation top-1", "validation top-5"}
    np.testing.assert_allclose(
        lines["validation top-1"].get_ydata(), [h["val_top1"] for h in history]
    )
    np.testing.assert_allclose(lines["train"].get_ydata(), [h["train_loss"] for h in history])
    np.testing.assert_allclose(lines["validation"].get_xdata(), range(1, 7))


def test_probe_curves_accept_a_csv_and_a_single_epoch(tmp_path):
    history = _history(epochs=1)
    csv_path = write_history_csv(history, tmp_path / "history.csv")
    plot_probe_curves(csv_path, tmp_path / "one.png")
    assert_png(tmp_path / "one.png")
    with pytest.raises(ValueError, match="history is empty"):
        plot_probe_curves([], tmp_path / "none.png")


def test_compare_draws_one_line_per_run_in_every_panel(tmp_path):
    first, second, third = _history(0), _history(1, epochs=4), _history(2, epochs=5)
    folder = tmp_path / "run_c"
    folder.mkdir()
    write_history_csv(third, folder / "history.csv")
    runs = {
        "model 1": first,
        "model 3": write_history_csv(second, tmp_path / "m3.csv"),
        "c": folder,
    }
    plot_compare(runs, tmp_path / "compare.png")
    assert_png(tmp_path / "compare.png")

    histories = {label: training_curves._as_history(run, label) for label, run in runs.items()}
    figure = training_curves._compare_figure(histories, ("val_top1", "val_loss"), "Runs compared")
    for ax, metric in zip(figure.axes, ("val_top1", "val_loss"), strict=True):
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == ["model 1", "model 3", "c"]
        for line, history in zip(lines, (first, second, third), strict=True):
            np.testing.assert_allclose(line.get_ydata(), [h[metric] for h in history], rtol=1e-12)
            np.testing.assert_allclose(line.get_xdata(), range(1, len(history) + 1))


def test_compare_refuses_a_run_without_the_metric(tmp_path):
    with pytest.raises(ValueError, match="run 'b' has no values for 'val_top1'"):
        plot_compare({"a": _history(), "b": [{"epoch": 1, "loss": 2.0}]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="runs must be a non-empty mapping"):
        plot_compare({}, tmp_path / "x.png")


def _clusters(per_class: int = 40, num_classes: int = 3, dim: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator) * 5
    labels = torch.arange(per_class * num_classes) % num_classes
    return centres[labels] + torch.randn(labels.shape[0], dim, generator=generator), labels


def test_tsne_samples_class_stratified_seeded_and_keeps_clusters_apart(tmp_path, one_openmp_thread):
    features, labels = _clusters(per_class=60)
    embedding = tsne_embedding(features, labels, max_points=90, seed=3)
    plot_tsne(embedding, ["a", "b", "c"], tmp_path / "tsne.png")
    assert_png(tmp_path / "tsne.png")
    assert embedding.points.shape == (90, 2) and embedding.indices.shape == (90,)
    assert np.all(np.diff(embedding.indices) > 0) and embedding.indices.max() < 180
    np.testing.assert_array_equal(embedding.labels, labels.numpy()[embedding.indices])
    assert np.bincount(embedding.labels).tolist() == [30, 30, 30]

    again = tsne_embedding(features, labels, max_points=90, seed=3)
    np.testing.assert_array_equal(again.indices, embedding.indices)
    np.testing.assert_allclose(again.points, embedding.points)
    assert not np.array_equal(_stratified_sample(labels.numpy(), 90, seed=4), embedding.indices)

    # Well separated clusters stay separated: each point's nearest 2-D neighbour shares its class.
    distance = np.linalg.norm(embedding.points[:, None] - embedding.points[None], axis=2)
    np.fill_diagonal(distance, np.inf)
    assert np.mean(embedding.labels[distance.argmin(axis=1)] == embedding.labels) > 0.95


def test_tsne_sample_sizes_follow_class_shares_exactly():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    chosen = _stratified_sample(labels, 11, seed=0)
    # 11 * (0.5, 0.3, 0.2) = 5.5, 3.3, 2.2 -> floors 5, 3, 2 and the leftover to class 0.
    assert np.bincount(labels[chosen]).tolist() == [6, 3, 2]
    assert chosen.size == np.unique(chosen).size == 11


def test_tsne_uses_every_point_when_there_are_few_and_names_default(tmp_path, one_openmp_thread):
    features, labels = _clusters(per_class=4)
    embedding = tsne_embedding(features, labels, max_points=5000)
    plot_tsne(embedding, None, tmp_path / "small.png")
    assert_png(tmp_path / "small.png")
    np.testing.assert_array_equal(embedding.indices, np.arange(12))
    with pytest.raises(ValueError, match="class_names has 2 names"):
        plot_tsne(embedding, ["a", "b"], tmp_path / "bad.png")


def _images(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, 16, 16), generator=generator, dtype=torch.uint8)


def test_nn_grid_shows_the_brute_force_neighbours_with_green_and_red_borders(tmp_path):
    features, labels = _clusters(per_class=20, num_classes=4)
    generator = torch.Generator().manual_seed(5)
    labels = torch.where(torch.rand(80, generator=generator) < 0.2, (labels + 1) % 4, labels)
    train_images, queries = _images(60, seed=1), torch.arange(60, 70)
    neighbours = nearest_neighbours(features[queries], features[:60], k=8)

    # Brute force: sort all train samples by cosine similarity, one query at a time.
    for row, query in enumerate(queries.tolist()):
        sims = torch.nn.functional.cosine_similarity(features[query][None], features[:60]).tolist()
        assert neighbours[row].tolist() == sorted(range(60), key=lambda i: -sims[i])[:8]

    query_images = _images(10, seed=2)
    names = ["w", "x", "y", "z"]
    plot_nn_grid(query_images, labels[queries], train_images, labels[:60], neighbours,
                 tmp_path / "nn_grid.png", names)  # fmt: skip
    assert_png(tmp_path / "nn_grid.png", min_width=600, min_height=600)

    figure = representation._nn_grid_figure(
        query_images, labels[queries], train_images, labels[:60], neighbours, names
    )
    axes = np.array(figure.axes).reshape(10, 9)
    green = matplotlib.colors.to_rgba(representation.SAME_CLASS_COLOUR)
    red = matplotlib.colors.to_rgba(representation.OTHER_CLASS_COLOUR)
    saw = set()
    for row in range(10):
        shown = axes[row, 0].get_images()[0].get_array()
        np.testing.assert_array_equal(shown, query_images[row].permute(1, 2, 0).numpy())
        for col in range(8):
            ax = axes[row, col + 1]
            neighbour = int(neighbours[row, col])
            np.testing.assert_array_equal(
                ax.get_images()[0].get_array(), train_images[neighbour].permute(1, 2, 0).numpy()
            )
            same = int(labels[neighbour]) == int(labels[queries[row]])
            assert ax.spines["top"].get_edgecolor() == (green if same else red)
            assert ax.get_title() == names[int(labels[neighbour])]
            saw.add(same)
    assert saw == {True, False}  # the picture exercises both borders


def test_nn_grid_handles_grey_images_and_refuses_tabular_rows(tmp_path):
    grey = torch.randint(0, 256, (5, 1, 12, 12), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0, 1, 0])
    neighbours = torch.tensor([[1, 2], [0, 3]])
    plot_nn_grid(grey[:2], labels[:2], grey, labels, neighbours, tmp_path / "grey.png")
    assert_png(tmp_path / "grey.png", min_width=150, min_height=100)
    rows = torch.randn(5, 7)
    with pytest.raises(ValueError, match="tabular rows cannot be drawn"):
        plot_nn_grid(rows[:2], labels[:2], rows, labels, neighbours, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"neighbour_indices must lie in \[0, 5\)"):
        plot_nn_grid(grey[:2], labels[:2], grey, labels, neighbours + 4, tmp_path / "x.png")
    with pytest.raises(ValueError, match="one non-empty row per query"):
        plot_nn_grid(grey[:3], labels[:3], grey, labels, neighbours, tmp_path / "x.png")
    with pytest.raises(ValueError, match="uint8 images"):
        plot_nn_grid(grey[:2].float(), labels[:2], grey, labels, neighbours, tmp_path / "x.png")


def test_a_picture_replaces_an_existing_file_atomically(tmp_path):
    target = tmp_path / "probe_curves.png"
    target.write_bytes(b"old")
    plot_probe_curves(_history(), target)
    assert_png(target)


# ------------------------------------------------------------------ axes rules (issue 12)


def data_lines(ax) -> list:
    """The curves of a panel, without its chance line."""
    return [line for line in ax.get_lines() if line.get_gid() != _figure.CHANCE_GID]


def chance_lines(ax) -> list:
    return [line for line in ax.get_lines() if line.get_gid() == _figure.CHANCE_GID]


def assert_one_epoch_axis(figure: Figure, last_epoch: int) -> None:
    """Every panel shares the first one's x axis: same limits from 0 to just past the last
    epoch, integer ticks, labelled epoch."""
    first = figure.axes[0]
    for ax in figure.axes:
        assert ax is first or first.get_shared_x_axes().joined(first, ax)
        assert ax.get_xlim() == first.get_xlim()
        assert ax.get_xlabel() == "epoch"
        ticks = ax.get_xticks()
        assert ticks.size >= 2 and np.all(ticks == np.round(ticks)), ticks
    low, high = first.get_xlim()
    assert low == 0.0 and last_epoch <= high < last_epoch + 0.5


def _knn_rows(knn: list[float], loss: list[float] | None = None, steps_per_epoch: int = 4):
    """Pretrain rows over len(knn) epochs: kNN at each epoch end, loss per step."""
    rows = []
    for step in range(1, len(knn) * steps_per_epoch + 1):
        end = step % steps_per_epoch == 0
        rows.append({
            "step": step,
            "epoch": step / steps_per_epoch,
            "loss": loss[step - 1] if loss else 5.0 / step,
            "lr": 0.01 * step,
            "knn_top1": knn[step // steps_per_epoch - 1] if end else None,
        })  # fmt: skip
    return rows


HEADER = ["step", "epoch", "loss", "lr", "knn_top1"]


def test_every_panel_of_every_curve_figure_shares_one_epoch_axis(tmp_path):
    metrics_csv = _write_metrics(tmp_path / "metrics.csv", _knn_rows([23.0, 23.5, 24.0]), HEADER)
    pretrain = training_curves._pretrain_figure(training_curves._read_metrics(metrics_csv))
    assert len(pretrain.axes) == 3
    assert_one_epoch_axis(pretrain, last_epoch=3)

    probe = training_curves._probe_figure(_history(epochs=6), "Linear probe")
    assert_one_epoch_axis(probe, last_epoch=6)

    runs = {"a": _history(0, epochs=4), "b": _history(1, epochs=7)}
    compared = training_curves._compare_figure(runs, ("val_top1", "val_loss"), "t")
    assert_one_epoch_axis(compared, last_epoch=7)
    # One epoch only: still integer ticks (0 and 1), not 0.2 steps between them.
    single = training_curves._compare_figure({"a": _history(epochs=1)}, ("val_top1",), "t")
    assert_one_epoch_axis(single, last_epoch=1)


def test_accuracy_panels_show_the_chance_level_on_a_0_to_100_axis(tmp_path):
    metrics_csv = _write_metrics(tmp_path / "metrics.csv", _knn_rows([23.0, 23.5, 24.0]), HEADER)
    metrics = training_curves._read_metrics(metrics_csv)
    knn_ax = training_curves._pretrain_figure(metrics, num_classes=10).axes[2]
    (chance,) = chance_lines(knn_ax)
    assert list(chance.get_ydata()) == [10.0, 10.0] and chance.get_linestyle() == "--"
    assert knn_ax.get_ylim() == (0.0, 100.0)
    np.testing.assert_allclose(data_lines(knn_ax)[0].get_ydata(), [23.0, 23.5, 24.0])

    # "auto" zooms on the values: 23-24 % fills the panel, the 10 % line stays out of view.
    zoomed = training_curves._pretrain_figure(metrics, num_classes=10, accuracy_ylim="auto")
    low, high = zoomed.axes[2].get_ylim()
    assert 22.0 < low < 23.0 and 24.0 < high < 25.0

    # Without a class count there is no chance line, but the axis is still 0-100.
    plain = training_curves._pretrain_figure(metrics).axes[2]
    assert chance_lines(plain) == [] and plain.get_ylim() == (0.0, 100.0)

    # Top-k panels: chance is 100 * min(k, C) / C; the probe draws top-1's.
    runs = {"a": [{"epoch": 1, "val_top1": 30.0, "val_top5": 70.0}]}
    compared = training_curves._compare_figure(runs, ("val_top1", "val_top5"), "t", num_classes=10)
    assert [chance_lines(ax)[0].get_ydata()[0] for ax in compared.axes] == [10.0, 50.0]
    probe = training_curves._probe_figure(_history(), "Linear probe", num_classes=3)
    assert chance_lines(probe.axes[1])[0].get_ydata()[0] == pytest.approx(100 / 3)
    assert chance_lines(probe.axes[0]) == [] and probe.axes[1].get_ylim() == (0.0, 100.0)


def test_the_chance_level_is_read_from_the_run_folder(tmp_path, figures):
    """meta.json's num_classes (the newest checkpoint) first, else config.yaml's dataset."""
    run = tmp_path / "run"
    run.mkdir()
    metrics_csv = _write_metrics(run / "metrics.csv", _knn_rows([30.0, 40.0]), HEADER)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"dataset": "cifar100"}}))
    plot_pretrain_curves(metrics_csv, run / "curves.png")
    assert chance_lines(figures[-1].axes[2])[0].get_ydata()[0] == 1.0  # 100 / 100 classes

    for step, classes in ((4, 5), (8, 4)):  # the newest checkpoint wins
        folder = run / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "meta.json").write_text(
            f'{{"step": {step}, "epoch": 1, "num_classes": {classes}}}'
        )
    plot_pretrain_curves(metrics_csv, run / "curves.png")
    assert chance_lines(figures[-1].axes[2])[0].get_ydata()[0] == 25.0  # 100 / 4

    plot_pretrain_curves(metrics_csv, run / "curves.png", num_classes=20)  # given: used
    assert chance_lines(figures[-1].axes[2])[0].get_ydata()[0] == 5.0

    other = tmp_path / "folder_run"
    other.mkdir()
    metrics_csv = _write_metrics(other / "metrics.csv", _knn_rows([30.0, 40.0]), HEADER)
    (other / "config.yaml").write_text(yaml.safe_dump({"data": {"dataset": "image_folder"}}))
    plot_pretrain_curves(metrics_csv, other / "curves.png")  # nothing says how many: no line
    assert chance_lines(figures[-1].axes[2]) == []
    assert_png(other / "curves.png")


def _loss_history(first: float, later: list[float]) -> list[dict[str, float]]:
    values = [first, *later]
    return [
        {"epoch": e, "val_loss": v, "val_top1": 10.0 * e} for e, v in enumerate(values, start=1)
    ]


def test_a_first_epoch_loss_outlier_is_clipped_and_said(tmp_path):
    runs = {
        "outlier": _loss_history(20.7, [1.5, 1.3, 1.2]),
        "steady": _loss_history(2.0, [1.6, 1.4, 1.3]),
    }
    ax = training_curves._compare_figure(runs, ("val_loss",), "t").axes[0]
    # The later values span 1.2 .. 1.6; the axis shows them (5 % margin) and not the 20.7.
    low, high = ax.get_ylim()
    assert high == pytest.approx(1.6 + 0.05 * 0.4) and low == pytest.approx(1.2 - 0.05 * 0.4)
    assert "(first-epoch values above 1.62 clipped)" in ax.get_title()
    assert max(data_lines(ax)[0].get_ydata()) == 20.7  # the data is kept, only the view clips

    # A normal first-epoch drop (2.0 to 1.6, or halving over two epochs) is left alone.
    calm = training_curves._compare_figure({"steady": runs["steady"]}, ("val_loss",), "t")
    assert "clipped" not in calm.axes[0].get_title() and calm.axes[0].get_ylim()[1] >= 2.0
    halving = {"two": _loss_history(4.0, [2.0])}
    two = training_curves._compare_figure(halving, ("val_loss",), "t").axes[0]
    assert "clipped" not in two.get_title() and two.get_ylim()[1] >= 4.0

    # Accuracy panels are never clipped; the probe and pretrain loss panels clip the same way.
    top1 = training_curves._compare_figure(runs, ("val_top1",), "t").axes[0]
    assert "clipped" not in top1.get_title() and top1.get_ylim() == (0.0, 100.0)
    history = [{"epoch": e, "train_loss": v, "val_loss": v} for e, v in
               enumerate([20.7, 1.5, 1.3, 1.2], start=1)]  # fmt: skip
    probe_loss = training_curves._probe_figure(history, "Linear probe").axes[0]
    assert probe_loss.get_ylim()[1] < 2.0 and "clipped" in probe_loss.get_title()
    losses = [20.7, 5.0, 4.0, 3.0] + [1.5, 1.4, 1.3, 1.2] * 2
    metrics_csv = _write_metrics(tmp_path / "m.csv", _knn_rows([1, 2, 3], losses), HEADER)
    loss_ax = training_curves._pretrain_figure(training_curves._read_metrics(metrics_csv)).axes[0]
    assert loss_ax.get_ylim()[1] == pytest.approx(1.5 + 0.05 * 0.3)
    assert "clipped" in loss_ax.get_title()


def test_axes_options_are_checked(tmp_path):
    metrics_csv = _write_metrics(tmp_path / "metrics.csv", _knn_rows([1.0]), HEADER)
    with pytest.raises(ValueError, match=r"accuracy_ylim must be one of \['full', 'auto'\]"):
        plot_pretrain_curves(metrics_csv, tmp_path / "x.png", accuracy_ylim="zoom")
    with pytest.raises(ValueError, match="num_classes must be None or an int >= 2, got 1"):
        plot_probe_curves(_history(), tmp_path / "x.png", num_classes=1)
    with pytest.raises(ValueError, match="accuracy_ylim must be one of"):
        plot_compare({"a": _history()}, tmp_path / "x.png", accuracy_ylim="log")
    assert not (tmp_path / "x.png").exists()
