"""The study report, on an output folder built by hand: cells.csv with known numbers, run.json,
the study copy and tiny per-run metrics; every number in REPORT.md is recomputed here with
statistics.mean / statistics.stdev straight from the cells.csv text."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from pathlib import Path

import pytest

from contrastkit.pipelines.study.cells_csv import CELL_COLUMNS
from contrastkit.pipelines.study.report import CPU_FIRST_LINE, read_cells, write_report

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

STUDY_YAML = """\
name: toy_study
description: A toy study that checks the report, not a paper.
evaluation:
  probe: linear
  label_fraction: 1.0
  pictures: true
cells:
  npair:
    config: {config}
    overrides: ["method.imix=none"]
  npair_imix:
    config: {config}
  joint_isd:
    config: {joint_config}
    task: joint
profiles:
  gpu:
    description: the paper's scale
    seeds: [0, 1, 2]
  cpu:
    description: scaled down for two cores
    seeds: [0, 1, 2]
    overrides: ["train.epochs=2"]
    scale_downs: ["2 epochs instead of 500", "encoder width 64 instead of 2048"]
references:
  - cell: npair
    metric: linear_top1
    value: 68.5
    source: "Lee et al., i-Mix (ICLR 2021), Table 2, CovType"
  - cell: npair_imix
    metric: knn_top1
    value: 72.1
    source: "Made-up kNN source, Table 9"
deltas:
  - name: i-Mix gain with N-pair
    plus: npair_imix
    minus: npair
    metric: linear_top1
    claimed: 3.6
    source: "Lee et al., Table 2"
  - name: joint against N-pair
    plus: joint_isd
    minus: npair
    metric: linear_top1
    claimed: 1.0
    source: "Made-up delta source"
"""

# (cell, seed, knn_top1, linear_top1, wall_s); joint_isd has seed 0 only (seeds 1, 2 missing).
SUMMARY = """**myresnet + linear classifier**, input (1, 3, 16, 16)

| Layer | Output shape | Parameters |
| --- | --- | ---: |
| backbone.conv1 | (1, 64, 16, 16) | 1,728 |
| **Total** | | **4,977,226** (trainable 4,977,226) |
"""

ROWS = [
    ("npair", 0, "40.5", "61.25", "10.0"),
    ("npair", 1, "42.0", "63.5", "11.0"),
    ("npair", 2, "41.0", "60.0", "12.5"),
    ("npair_imix", 0, "45.75", "66.0", "20.0"),
    ("npair_imix", 2, "44.0", "67.25", "21.0"),
    ("npair_imix", 1, "47.5", "64.5", "19.0"),  # out of seed order on purpose
    ("joint_isd", 0, "", "90.0", "30.0"),
]


def _run_dir(output: Path, cell: str, seed: int) -> Path:
    return output / "cells" / cell / f"seed{seed}" / "pretrain"


def _write_metrics(run_dir: Path, joint: bool) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    if joint:
        (run_dir / "history.csv").write_text(
            "epoch,train_loss,val_loss,val_top1\n1,2.0,1.9,50.0\n2,1.5,1.4,60.0\n"
        )
    else:
        (run_dir / "metrics.csv").write_text(
            "step,epoch,loss,lr,knn_top1\n1,0.5,5.0,0.1,\n2,1.0,4.0,0.1,30.0\n"
            "3,1.5,3.5,0.05,\n4,2.0,3.0,0.01,40.0\n"
        )


def _write_cells(output: Path, rows: list[tuple[str, int, str, str, str]]) -> None:
    with (output / "cells.csv").open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CELL_COLUMNS)
        for cell, seed, knn, linear, wall in rows:
            joint = cell.startswith("joint")
            values = {
                "study": "toy_study", "cell": cell, "seed": seed, "method": "npair",
                "imix": "imixup" if cell.endswith("imix") else "none", "backbone": "mlp",
                "epochs": 2, "knn_top1": knn, "linear_top1": linear, "wall_s": wall,
                "profile": "cpu", "task": "joint" if joint else "pretrain",
                "probe": "" if joint else "linear", "label_fraction": "" if joint else 1.0,
                "val_top1": linear if joint else "", "pretrain_s": wall, "probe_s": "",
                "run_dir": str(_run_dir(output, cell, seed).relative_to(output)),
            }  # fmt: skip
            writer.writerow([values[column] for column in CELL_COLUMNS])


def make_output(tmp_path: Path) -> Path:
    """A study output folder as the runner leaves it (profile cpu), written by hand."""
    studies = tmp_path / "studies"
    studies.mkdir()
    text = STUDY_YAML.format(
        config=CONFIGS / "imix_moco_covtype.yaml",
        joint_config=CONFIGS / "joint_isd_myresnet_cifar10.yaml",
    )
    (studies / "toy_study.yaml").write_text(text)
    output = tmp_path / "out"
    output.mkdir()
    (output / "study.yaml").write_text(text)
    run = {
        "study": "toy_study", "profile": "cpu", "seeds": [0, 1, 2],
        "cells": ["npair", "npair_imix", "joint_isd"], "started": "2026-12-02T03:00:00",
        "command": ["python", "packages/pipelines/study.py", "run", "toy_study", "--profile", "cpu"],
        "study_file": str(studies / "toy_study.yaml"),
    }  # fmt: skip
    (output / "run.json").write_text(json.dumps(run))
    _write_cells(output, ROWS)
    for cell, seed, *_ in ROWS:
        _write_metrics(_run_dir(output, cell, seed), cell.startswith("joint"))
    probe = output / "cells" / "npair_imix" / "seed0" / "probe"  # the best pretrain cell
    probe.mkdir(parents=True)
    (probe / "tsne.png").write_bytes(b"\x89PNG tsne of npair_imix")
    (probe / "nn_grid.png").write_bytes(b"\x89PNG grid of npair_imix")
    (probe / "model_summary.md").write_text(SUMMARY)
    return output


@pytest.fixture
def output(tmp_path: Path) -> Path:
    """make_output in the test's tmp_path."""
    return make_output(tmp_path)


def _column(output: Path, cell: str, column: str) -> dict[int, float]:
    with (output / "cells.csv").open(newline="") as handle:
        return {int(r["seed"]): float(r[column]) for r in csv.DictReader(handle)
                if r["cell"] == cell and r[column] != ""}  # fmt: skip


def _table_rows(report: str) -> dict[str, list[str]]:
    """The results table: cell name -> its columns."""
    rows = {}
    for line in report.splitlines():
        if line.startswith("| `"):
            parts = [part.strip() for part in line.strip("|").split(" | ")]
            rows[parts[0].split("`")[1]] = parts
    return rows


def test_report_table_is_the_mean_and_sample_std_of_cells_csv(output: Path) -> None:
    report = write_report(output).read_text()
    rows = _table_rows(report)
    assert list(rows) == ["npair", "npair_imix", "joint_isd"]  # the study's order
    for cell in ("npair", "npair_imix"):
        for column, index in (("knn_top1", 5), ("linear_top1", 6)):
            values = list(_column(output, cell, column).values())
            expected = f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
            assert rows[cell][index] == expected, (cell, column)
    assert (
        rows["npair"][6] == "61.58 ± 1.77"
    )  # by hand: mean 184.75 / 3, stdev of (-0.33, 1.92, -1.58)
    assert rows["joint_isd"][0] == "`joint_isd` (joint)"
    assert rows["joint_isd"][5] == "not measured"  # no kNN value
    assert rows["joint_isd"][6] == "90.00 ± n/a"  # one seed: no std
    assert rows["npair_imix"][2] == "imixup" and rows["npair"][2] == "none"
    assert rows["npair"][4] == "0, 1, 2"
    walls = list(_column(output, "npair", "wall_s").values())
    assert rows["npair"][8] == f"{statistics.mean(walls):.1f} s per seed ({sum(walls):.1f} s)"


def test_report_deltas_use_paired_seed_differences(output: Path) -> None:
    report = write_report(output).read_text()
    plus, minus = (
        _column(output, "npair_imix", "linear_top1"),
        _column(output, "npair", "linear_top1"),
    )
    ours = statistics.mean(plus.values()) - statistics.mean(minus.values())
    paired = statistics.stdev([plus[seed] - minus[seed] for seed in (0, 1, 2)])
    line = next(line for line in report.splitlines() if line.startswith("| i-Mix gain"))
    assert f"| +3.60 (Lee et al., Table 2) | {ours:+.2f} ± {paired:.2f} |" in line
    assert "`npair_imix` − `npair`, linear top-1" in line
    # joint_isd has seed 0 only: the difference of means, no paired std.
    line = next(line for line in report.splitlines() if line.startswith("| joint against"))
    unpaired = 90.0 - statistics.mean(minus.values())
    assert f"{unpaired:+.2f} ± n/a (unpaired: seeds [0] vs [0, 1, 2])" in line


def test_cpu_report_says_so_first_and_lists_profile_references_and_missing_seeds(
    output: Path,
) -> None:
    report = write_report(output).read_text()
    lines = report.splitlines()
    assert lines[0] == CPU_FIRST_LINE
    assert lines[0] == (
        "**CPU profile: scaled down to run on 2 CPU cores; these numbers are not comparable "
        "to the paper's.**"
    )
    assert "# Study toy_study: cpu profile" in lines
    assert "A toy study that checks the report, not a paper." in lines
    assert "- 2 epochs instead of 500" in lines and "- encoder width 64 instead of 2048" in lines
    assert "python packages/pipelines/study.py run toy_study --profile cpu" in report
    rows = _table_rows(report)
    assert (
        rows["npair"][7] == "68.50 linear top-1 (Lee et al., i-Mix (ICLR 2021), Table 2, CovType)"
    )
    assert rows["npair_imix"][7] == "72.10 kNN top-1 (Made-up kNN source, Table 9)"
    assert rows["joint_isd"][4] == "0 (**missing: 1, 2**)"
    assert "**Not finished:** `joint_isd` seeds 1, 2." in lines


def test_gpu_report_has_no_cpu_line(output: Path) -> None:
    run = json.loads((output / "run.json").read_text())
    (output / "run.json").write_text(json.dumps({**run, "profile": "gpu"}))
    report = write_report(output).read_text()
    assert "CPU profile" not in report
    assert report.splitlines()[0] == "# Study toy_study: gpu profile"
    assert "Scale-downs: none (the paper's scale)." in report


def test_report_pictures(output: Path, figures: list) -> None:
    report = write_report(output).read_text()
    for name in ("bars.png", "curves.png", "best_tsne.png", "best_nn_grid.png"):
        assert (output / name).stat().st_size > 0, name
        assert f"]({name})" in report, name
    # The best pretrain cell by mean linear top-1 is npair_imix (the joint cell is higher but
    # has no probe): its first seed's probe pictures are copied as they are.
    assert (output / "best_tsne.png").read_bytes() == b"\x89PNG tsne of npair_imix"
    assert (output / "best_nn_grid.png").read_bytes() == b"\x89PNG grid of npair_imix"
    # Its model summary too, linked with the total the summary gives.
    assert (output / "best_model_summary.md").read_text() == SUMMARY
    assert (
        "- model summary of the best cell `npair_imix` (seed 0: its backbone and the probe's "
        "linear head, 4,977,226 parameters): [best_model_summary.md](best_model_summary.md)"
    ) in report
    bars, curves = figures
    heights = sorted(round(patch.get_height(), 6) for patch in bars.axes[0].patches)
    means = [
        statistics.mean(_column(output, cell, column).values())
        for cell in ("npair", "npair_imix")
        for column in ("knn_top1", "linear_top1")
    ]
    assert heights == sorted([*(round(m, 6) for m in means), 90.0])  # joint: linear only
    markers = [line for line in bars.axes[0].get_lines() if line.get_marker() == "D"]
    assert sorted(float(line.get_ydata()[0]) for line in markers) == [68.5, 72.1]
    # Curves: the panels every run shares (val_top1), one line per cell's first seed.
    panel = curves.axes[0]
    labels = [line.get_label() for line in panel.get_lines() if line.get_gid() != "chance"]
    assert labels == ["npair (seed 0)", "npair_imix (seed 0)", "joint_isd (seed 0)"]
    assert len(curves.axes) == 1  # the joint run has no pretrain loss: no loss panel


def test_a_cell_without_rows_is_marked_not_run(output: Path) -> None:
    _write_cells(output, [row for row in ROWS if row[0] != "joint_isd"])
    report = write_report(output).read_text()
    rows = _table_rows(report)
    assert rows["joint_isd"][4] == "none (**missing: 0, 1, 2**)"
    assert rows["joint_isd"][6] == "not measured"
    assert "not measured (joint_isd has no linear_top1)" in report


def _bad_row(second: str, case: str) -> str:
    fields = second.split(",")
    if case == "short":
        return ",".join(fields[:3])
    if case == "text in a number column":
        fields[CELL_COLUMNS.index("seed")] = "7"
        fields[CELL_COLUMNS.index("linear_top1")] = "abc"
    return ",".join(fields)  # "duplicate": the same (cell, seed) again


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("short", r"cells\.csv: line 3: 3 fields, expected 18"),
        ("text in a number column", r"cells\.csv: line 3: column 'linear_top1' must be a finite "
                                    r"number or empty \(does not apply\), got 'abc'"),
        ("duplicate", r"cells\.csv: line 3: cell 'npair' seed 0 already has a row \(line 2\)"),
    ],
)  # fmt: skip
def test_corrupt_cells_csv_names_the_file_and_line(output: Path, case: str, message: str) -> None:
    path = output / "cells.csv"
    header, second = path.read_text().splitlines()[:2]
    path.write_text(f"{header}\n{second}\n{_bad_row(second, case)}\n")
    with pytest.raises(ValueError, match=message) as error:
        read_cells(output)
    assert str(path) in str(error.value)
    with pytest.raises(ValueError, match=message):
        write_report(output)


def test_a_row_of_an_unknown_cell_names_it(output: Path) -> None:
    _write_cells(output, [*ROWS, ("npair_mixup", 0, "1.0", "2.0", "3.0")])
    with pytest.raises(ValueError, match=r"cells\.csv: cell 'npair_mixup' is not a cell of study"):
        write_report(output)


def test_without_linear_top1_the_best_cell_is_the_best_knn(output: Path) -> None:
    # A kNN-only study: no linear top-1 for the pretrain cells; npair has the higher kNN mean.
    rows = [(cell, seed, str(float(knn) + 10 * (cell == "npair")), "", wall)
            for cell, seed, knn, _, wall in ROWS if cell != "joint_isd"]  # fmt: skip
    write_report(output)  # npair_imix is best first: its summary is copied
    assert (output / "best_model_summary.md").is_file()
    _write_cells(output, rows)
    probe = output / "cells" / "npair" / "seed0" / "probe"
    probe.mkdir(parents=True)
    (probe / "tsne.png").write_bytes(b"\x89PNG tsne of npair")
    report = write_report(output).read_text()
    assert (output / "best_tsne.png").read_bytes() == b"\x89PNG tsne of npair"
    assert not (output / "best_nn_grid.png").exists()  # this probe wrote no grid
    assert "best pretrain cell by mean knn_top1: `npair`" in report
    assert "nearest neighbours of test images: not shown, the probe wrote none" in report
    assert not (output / "best_model_summary.md").exists()  # nor a summary: the old copy goes
    assert "model summary" not in report
    assert _table_rows(report)["npair"][6] == "not measured"


def test_curves_of_the_runs_that_share_one_when_no_curve_is_shared_by_all(
    output: Path, figures: list
) -> None:
    # Pretrain runs without a kNN monitor (no val_top1) beside a joint run (no pretrain loss):
    # the curve most runs have (the two pretrain cells' loss), the others said in a note.
    for cell in ("npair", "npair_imix"):
        for seed in (0, 1, 2):
            metrics = _run_dir(output, cell, seed) / "metrics.csv"
            if metrics.exists():
                metrics.write_text("step,epoch,loss,lr\n1,0.5,5.0,0.1\n2,1.0,4.0,0.1\n")
    report = write_report(output).read_text()
    assert "](curves.png)" in report
    assert "curves.png shows loss only; left out (no loss curve): ['joint_isd (seed 0)']" in report
    curves = figures[-1]
    labels = [line.get_label() for line in curves.axes[0].get_lines() if line.get_gid() != "chance"]
    assert labels == ["npair (seed 0)", "npair_imix (seed 0)"] and len(curves.axes) == 1


def test_a_folder_without_its_runs_keeps_the_pictures_they_gave(output: Path) -> None:
    """A committed result holds no cells/: `study.py report` on it keeps the curves, the best
    cell's pictures and its model summary that the first report copied, and says so."""
    first = write_report(output).read_text()
    kept = ("curves.png", "best_tsne.png", "best_nn_grid.png", "best_model_summary.md")
    before = {name: (output / name).read_bytes() for name in kept}
    shutil.rmtree(output / "cells")
    (output / "bars.png").unlink()
    again = write_report(output).read_text()
    for name in kept:
        assert (output / name).read_bytes() == before[name], name  # untouched
    assert (output / "bars.png").stat().st_size > 0  # redrawn from cells.csv
    for line in first.splitlines():
        if line.startswith(("![", "*", "|", "- model summary")):
            assert line in again, line
    assert (
        "- this folder has no `cells/` (the run folders), so the curves and the best cell's "
        "pictures could not be drawn again: curves.png, best_tsne.png, best_nn_grid.png kept as "
        "the report beside the runs drew them; bars.png and the tables were rebuilt from cells.csv"
    ) in again
    assert "not shown" not in again and "left out" not in again

    # With nothing kept either, only the bars are shown and the note says so.
    for name in kept:
        (output / name).unlink()
    bare = write_report(output).read_text()
    assert "](bars.png)" in bare and bare.count("![") == 1
    assert "could not be drawn again: nothing else kept;" in bare
