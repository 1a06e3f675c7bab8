"""Tests of the compare command: one line per run and panel with the runs' own values, pretrain
per-step logs averaged per epoch, the merged results table, and clear errors."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from contrastkit.pipelines import compare
from contrastkit.pipelines.evaluation.report import report_written_by
from contrastkit.pipelines.evaluation.results import append_results, write_history_csv
from contrastkit.pipelines.plots import _figure


def probe_run(folder: Path, val_top1: list[float], val_loss: list[float]) -> Path:
    history = [
        {"epoch": e, "train_loss": 2.0 / e, "val_loss": loss, "val_top1": top1, "val_top5": 99.0}
        for e, (top1, loss) in enumerate(zip(val_top1, val_loss, strict=True), start=1)
    ]
    write_history_csv(history, folder / "metrics.csv")
    return folder


def pretrain_run(folder: Path) -> Path:
    """A pretrain metrics.csv: 4 steps per epoch, epoch = steps done / 4, kNN at each epoch end."""
    folder.mkdir(parents=True)
    columns = ["step", "epoch", "loss", "lr", "knn_top1", "knn_top5"]
    with (folder / "metrics.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        for step in range(1, 9):
            row: dict[str, Any] = {"step": step, "epoch": step / 4, "loss": 10.0 - step, "lr": 0.1}
            if step % 4 == 0:
                row.update(knn_top1=20.0 * step / 4, knn_top5=50.0)
            writer.writerow(row)
    return folder


def test_one_line_per_run_with_each_runs_values(tmp_path: Path, figures: list[Figure]) -> None:
    runs = {
        "model1": ([30.0, 40.0, 45.0], [1.9, 1.5, 1.4]),
        "model3": ([35.0, 50.0, 60.0], [1.8, 1.3, 1.1]),
    }
    paths = [probe_run(tmp_path / name, *values) for name, values in runs.items()]
    out = tmp_path / "compare.png"
    assert compare.main([*map(str, paths), "--output", str(out)]) == 0

    image = imread(out)
    assert image.ndim == 3 and min(image.shape[:2]) > 100 and image.std() > 0
    (figure,) = figures
    panels = [ax for ax in figure.axes if ax.get_lines()]
    assert len(panels) == 2  # val_top1 and val_loss
    for ax, index in zip(panels, (0, 1), strict=True):
        lines = ax.get_lines()
        assert [line.get_label() for line in lines] == list(runs)
        for line, values in zip(lines, runs.values(), strict=True):
            assert list(line.get_xdata()) == [1.0, 2.0, 3.0]
            assert list(line.get_ydata()) == values[index]


def test_pretrain_logs_are_averaged_per_epoch_and_labels_apply(
    tmp_path: Path, figures: list[Figure]
) -> None:
    pretrain = pretrain_run(tmp_path / "pretrain")
    curves = compare.read_run_curves(pretrain)
    assert curves.kind == "pretrain"
    assert [r["epoch"] for r in curves.history] == [1.0, 2.0]
    assert [r["loss"] for r in curves.history] == [(9 + 8 + 7 + 6) / 4, (5 + 4 + 3 + 2) / 4]
    assert [r["val_top1"] for r in curves.history] == [20.0, 40.0]  # the kNN of each epoch end

    probe = probe_run(tmp_path / "probe", [30.0, 50.0], [1.0, 0.8])
    out = tmp_path / "mixed.png"
    argv = [str(pretrain), str(probe / "metrics.csv"), "--output", str(out)]
    assert compare.main([*argv, "--labels", "ssl", "linear"]) == 0
    (figure,) = figures
    (panel,) = [ax for ax in figure.axes if ax.get_lines()]  # only val_top1 is shared
    assert [line.get_label() for line in panel.get_lines()] == ["ssl", "linear"]
    assert list(panel.get_lines()[0].get_ydata()) == [20.0, 40.0]

    assert compare.main([str(pretrain), "--output", str(out), "--metric", "loss", "lr"]) == 0
    loss_panel = next(ax for ax in figures[-1].axes if ax.get_lines())
    assert list(loss_panel.get_lines()[0].get_ydata()) == [7.5, 3.5]


def test_a_joint_run_folder_is_read_from_its_per_epoch_history(
    tmp_path: Path, figures: list[Figure]
) -> None:
    """Joint runs log per step in metrics.csv and per epoch (train and val) in history.csv."""
    runs = {"ISD + CE": ([40.0, 55.0], [1.6, 1.2]), "CE only": ([42.0, 50.0], [1.5, 1.3])}
    paths = []
    for name, (top1, loss) in runs.items():
        folder = pretrain_run(tmp_path / name.replace(" ", "_").replace("+", "p"))
        write_history_csv(
            [
                {"epoch": e, "train_loss": 2.0, "val_loss": vl, "val_top1": vt}
                for e, (vt, vl) in enumerate(zip(top1, loss, strict=True), start=1)
            ],
            folder / "history.csv",
        )
        paths.append(str(folder))
    curves = compare.read_run_curves(paths[0])
    assert curves.kind == "probe" and curves.source.name == "history.csv"
    out = tmp_path / "joint.png"
    assert compare.main([*paths, "--labels", *runs, "--output", str(out)]) == 0
    panels = [ax for ax in figures[-1].axes if ax.get_lines()]
    assert len(panels) == 2  # val_top1 and val_loss, not the pretrain-style loss
    for ax, index in zip(panels, (0, 1), strict=True):
        for line, values in zip(ax.get_lines(), runs.values(), strict=True):
            assert list(line.get_ydata()) == values[index]


def test_results_files_print_one_merged_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = {
        "simclr_run": {"method": "simclr", "backbone": "resnet18_cifar", "epochs": 200,
                       "knn_top1": 84.7, "linear_top1": 88.25, "wall_s": 10.0},
        "isd_run": {"method": "isd", "backbone": "myresnet", "epochs": 200, "knn_top1": 86.1,
                    "linear_top1": 89.5, "wall_s": 12.5, "mode": "finetune"},
    }  # fmt: skip
    for name, row in rows.items():
        append_results(tmp_path / name / "results.csv", row)
    probe_run(tmp_path / "isd_run", [80.0, 89.5], [0.6, 0.4])

    out = tmp_path / "compare.png"
    argv = [str(tmp_path / "simclr_run" / "results.csv"), str(tmp_path / "isd_run")]
    assert compare.main([*argv, "--output", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| run | method | backbone | epochs |")
    assert "| simclr_run | simclr | resnet18_cifar | 200 |" in table[2]
    assert "| isd_run | isd | myresnet | 200 |" in table[3] and "finetune" in table[3]
    assert "88.25" in table[2] and "89.50" in table[3]
    assert out.is_file()  # the isd_run folder also had curves


def test_bad_inputs_give_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def error(*argv: str | Path) -> str:
        assert compare.main([str(a) for a in argv]) == 2
        return capsys.readouterr().err

    missing = tmp_path / "missing"
    assert f"{str(missing)!r} does not exist" in error(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "has no metrics.csv" in error(empty)
    run = probe_run(tmp_path / "run", [1.0], [2.0])
    message = error(run, "--labels", "a", "b", "--output", tmp_path / "x.png")
    assert "--labels gives 2 labels but there are 1 runs" in message
    message = error(run, "--metric", "knn_top1", "--output", tmp_path / "x.png")
    assert "knn_top1" in message and "val_top1" in message
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------ report.md, chance, zoom


def _data_lines(ax) -> list:
    return [line for line in ax.get_lines() if line.get_gid() != _figure.CHANCE_GID]


def _chance(ax) -> list[float]:
    return [line.get_ydata()[0] for line in ax.get_lines() if line.get_gid() == _figure.CHANCE_GID]


def test_compare_writes_its_report_beside_the_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = {
        "model1": ([30.0, 45.0, 40.0], [1.9, 1.5, 1.4]),
        "model3": ([35.0, 50.0, 60.0], [1.8, 1.3, 1.1]),
    }
    paths = [str(probe_run(tmp_path / name, *values)) for name, values in runs.items()]
    append_results(tmp_path / "model3" / "results.csv", {"method": "isd", "linear_top1": 60.0})
    out = tmp_path / "cmp" / "compare.png"
    assert compare.main([*paths, "--output", str(out)]) == 0
    assert f"wrote {out.parent / 'report.md'}" in capsys.readouterr().err
    report = (out.parent / "report.md").read_text()
    assert report.startswith("# Runs compared\n")
    assert "](compare.png)" in report  # linked relative to the report
    # Final numbers: last val_top1, best val_top1 with its epoch, last val_loss; by hand.
    assert (
        "| run | source | epochs | val_top1 (last) | val_top1 (best, epoch) | val_loss (last) |"
        in report
    )
    assert "| model1 | " in report and "| 3 | 40.00 | 45.00 (2) | 1.4 |" in report
    assert "| 3 | 60.00 | 60.00 (3) | 1.1 |" in report
    assert "## Results" in report and "| model3 | isd |" in report  # the results.csv row
    assert report_written_by(out.parent / "report.md") == "contrastkit-compare"

    # compare's own report is replaced by the next comparison; --report puts it elsewhere.
    assert compare.main([paths[0], "--output", str(out)]) == 0
    assert "| model3 |" not in (out.parent / "report.md").read_text()
    elsewhere = tmp_path / "notes" / "cmp.md"
    assert compare.main([*paths, "--output", str(out), "--report", str(elsewhere)]) == 0
    assert "](../cmp/compare.png)" in elsewhere.read_text()


def test_compare_never_overwrites_another_commands_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = probe_run(tmp_path / "run", [30.0, 40.0], [1.0, 0.9])
    theirs = run / "report.md"
    theirs.write_text("# Probe: simclr\n\nthe probe's own report\n")
    out = run / "compare.png"
    assert compare.main([str(run), "--output", str(out)]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1
    assert f"{str(theirs)!r} is another command's report" in message and "--report" in message
    assert theirs.read_text() == "# Probe: simclr\n\nthe probe's own report\n"
    assert not out.exists()  # nothing drawn either

    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    assert compare.main([str(run), "--output", str(a_file / "compare.png")]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and str(a_file) in message and "is a file" in message


def test_accuracy_panels_get_chance_and_0_100_unless_zoomed(
    tmp_path: Path, figures: list[Figure]
) -> None:
    """Two pretrain runs on CIFAR-10 (config.yaml says so): chance 10 % on the kNN panel."""
    paths = []
    for name in ("a", "b"):
        folder = pretrain_run(tmp_path / name)
        (folder / "config.yaml").write_text("data:\n  dataset: cifar10\n")
        paths.append(str(folder))
    out = tmp_path / "compare.png"
    assert compare.main([*paths, "--output", str(out)]) == 0
    top1, loss = figures[-1].axes
    assert _chance(top1) == [10.0] and top1.get_ylim() == (0.0, 100.0)
    assert _chance(loss) == []
    assert [list(line.get_ydata()) for line in _data_lines(top1)] == [[20.0, 40.0]] * 2

    assert compare.main([*paths, "--output", str(out), "--zoom"]) == 0
    low, high = figures[-1].axes[0].get_ylim()
    assert 15.0 < low < 20.0 and 40.0 < high < 45.0  # zoomed on 20-40 %

    assert compare.main([*paths, "--output", str(out), "--num-classes", "4"]) == 0
    assert _chance(figures[-1].axes[0]) == [25.0]
    # Runs on different datasets: no single chance level, so no line.
    (tmp_path / "b" / "config.yaml").write_text("data:\n  dataset: cifar100\n")
    assert compare.main([*paths, "--output", str(out)]) == 0
    assert _chance(figures[-1].axes[0]) == []
