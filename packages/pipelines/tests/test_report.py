"""results.csv header handling, markdown tables, history CSVs and report.md embedding what exists."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from contrastkit.pipelines.evaluation.report import (
    FIGURE_CAPTIONS,
    ReportSection,
    model_summary_markdown,
    report_written_by,
    write_report,
)
from contrastkit.pipelines.evaluation.results import (
    RESULTS_COLUMNS,
    append_results,
    read_history_csv,
    read_results,
    results_table_markdown,
    write_history_csv,
)


def _raw_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as file:
        return list(csv.reader(file))


def test_a_new_results_file_starts_with_the_standard_columns_then_the_rows_extras(tmp_path):
    path = tmp_path / "sub" / "results.csv"
    row = {"wall_s": 12.5, "method": "simclr", "label_fraction": 0.1, "backbone": "resnet18_cifar"}
    assert append_results(path, row) == path
    rows = _raw_rows(path)
    assert rows[0] == [*RESULTS_COLUMNS, "label_fraction"]
    assert rows[1] == ["simclr", "resnet18_cifar", "", "", "", "12.5", "0.1"]


def test_new_columns_extend_the_header_and_old_rows_get_empty_cells(tmp_path):
    path = tmp_path / "results.csv"
    append_results(path, {"method": "moco", "epochs": 10, "knn_top1": 41.25})
    append_results(path, {"method": "byol", "epochs": 20, "seed": 3})
    append_results(path, {"method": "isd", "linear_top1": torch.tensor(55.5), "seed": np.int64(4)})
    rows = read_results(path)
    assert list(rows[0]) == [*RESULTS_COLUMNS, "seed"]
    assert [r["method"] for r in rows] == ["moco", "byol", "isd"]
    assert [r["seed"] for r in rows] == ["", "3", "4"]
    assert rows[0]["knn_top1"] == "41.25" and rows[2]["linear_top1"] == "55.5"
    assert rows[1]["knn_top1"] == ""
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_floats_are_written_exactly(tmp_path):
    path = tmp_path / "results.csv"
    value = 1 / 3
    append_results(path, {"method": "simclr", "linear_top1": value, "done": True, "note": None})
    row = read_results(path)[0]
    assert float(row["linear_top1"]) == value
    assert row["done"] == "true" and row["note"] == ""


def test_an_existing_header_with_other_columns_is_kept(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("run,method,linear_top1\nold,simclr,50.0\n")
    append_results(path, {"method": "moco", "linear_top1": 60.0})
    assert _raw_rows(path) == [
        ["run", "method", "linear_top1"],
        ["old", "simclr", "50.0"],
        ["", "moco", "60.0"],
    ]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({}, "non-empty mapping"),
        ({"": 1}, "non-empty one-line strings"),
        ({"a": torch.ones(2)}, "scalar"),
    ],
)
def test_append_results_rejects_bad_rows(tmp_path, row, message):
    with pytest.raises(ValueError, match=message):
        append_results(tmp_path / "results.csv", row)


def test_results_table_markdown(tmp_path):
    path = tmp_path / "results.csv"
    append_results(
        path,
        {"method": "simclr", "backbone": "r18", "epochs": 200, "knn_top1": 84.7123, "wall_s": 3600},
    )
    append_results(path, {"method": "a|b", "backbone": "r18", "epochs": 1, "linear_top1": 9.999})
    table = results_table_markdown(path)
    lines = table.splitlines()
    assert lines[0] == "| " + " | ".join(RESULTS_COLUMNS) + " |"
    assert len(lines) == 4 and table.endswith("\n")
    assert lines[2] == "| simclr | r18 | 200 | 84.71 |  | 3600 |"
    assert lines[3] == "| a\\|b | r18 | 1 |  | 10.00 |  |"
    assert (
        results_table_markdown(path, columns=["method", "knn_top1"]).splitlines()[2]
        == "| simclr | 84.71 |"
    )
    with pytest.raises(ValueError, match=r"columns \['nope'\] are not in"):
        results_table_markdown(path, columns=["nope"])
    with pytest.raises(FileNotFoundError):
        results_table_markdown(tmp_path / "missing.csv")


def test_history_csv_round_trips(tmp_path):
    history = [
        {"epoch": 1, "train_loss": 2.25, "val_top1": 10.0},
        {"epoch": 2, "train_loss": 1.5, "val_top1": 20.0, "lr": 0.05},
    ]
    path = write_history_csv(history, tmp_path / "history.csv")
    assert _raw_rows(path)[0] == ["epoch", "train_loss", "val_top1", "lr"]
    back = read_history_csv(path)
    assert back[1] == {"epoch": 2.0, "train_loss": 1.5, "val_top1": 20.0, "lr": 0.05}
    assert np.isnan(back[0]["lr"])
    (tmp_path / "bad.csv").write_text("epoch,loss\n1,abc\n")
    with pytest.raises(ValueError, match="line 2: column 'loss' holds 'abc'"):
        read_history_csv(tmp_path / "bad.csv")


def test_model_summary_markdown_from_the_backbones_summary():
    backbones = pytest.importorskip("contrastkit.backbones")
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    summary = backbones.model_summary(model, (1, 3, 8, 8))
    table = model_summary_markdown(summary)
    lines = table.splitlines()
    body = [line for line in lines if line.startswith("| ") and "---" not in line][1:-1]
    assert len(body) == len(summary.rows) == 4
    assert body[0] == "| 0 | (1, 4, 6, 6) | 112 |"
    assert body[3] == "| 3 | (1, 10) | 1,450 |"
    total = sum(p.numel() for p in model.parameters())
    assert lines[-1] == f"| **Total** | | **{total:,}** (trainable {total:,}) |"
    assert lines[0].startswith("**Sequential**, input (1, 3, 8, 8)")


def test_model_summary_markdown_needs_rows():
    with pytest.raises(ValueError, match=r"summary must have \.rows"):
        model_summary_markdown(object())


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    return path


def test_report_embeds_the_figures_and_table_that_exist(tmp_path):
    out = tmp_path / "probe"
    _png(out / "tsne.png")
    _png(out / "curves.png")
    _png(out / "zz extra.png")
    _png(out / ".tsne.png.123.tmp.png")  # a half-written temporary file is never linked
    elsewhere = _png(tmp_path / "pretrain" / "compare.png")
    append_results(out / "results.csv", {"method": "simclr", "linear_top1": 80.0})
    sections = [
        ReportSection("Model summary", "| a | b |\n| --- | --- |\n"),
        ReportSection(
            "Pretraining", "From the run folder.", images=[(elsewhere, "compare"), "missing.png"]
        ),
    ]
    report = write_report(out, title="Probe of simclr", sections=sections)
    assert report == out / "report.md"
    text = report.read_text()
    assert text.startswith("# Probe of simclr\n\n## Results\n\n| method |")
    links = re.findall(r"!\[[^\]]*\]\(<?([^)>]+)>?\)", text)
    # Section image first, then the known figures in FIGURE_CAPTIONS order, then the others.
    assert links == ["../pretrain/compare.png", "curves.png", "tsne.png", "zz extra.png"]
    assert all((out / link).is_file() for link in links)
    assert "(<zz extra.png>)" in text and "missing.png" not in text
    assert FIGURE_CAPTIONS["tsne.png"] in text
    assert text.index("## Model summary") < text.index("## Pretraining") < text.index("## Figures")


def test_report_without_figures_or_results(tmp_path):
    report = write_report(tmp_path / "empty", title="Nothing yet")
    assert report.read_text() == "# Nothing yet\n"
    with pytest.raises(FileNotFoundError, match="results_csv not found"):
        write_report(tmp_path, title="x", results_csv=tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="title must be a non-empty string"):
        write_report(tmp_path, title=" ")


def test_a_report_says_which_command_wrote_it(tmp_path):
    append_results(tmp_path / "results.csv", {"method": "simclr"})
    report = write_report(
        tmp_path, title="Cmp", written_by="contrastkit-compare", include_results=False,
        file_name="cmp.md",
    )  # fmt: skip
    assert report == tmp_path / "cmp.md"
    lines = report.read_text().splitlines()
    assert lines[0] == "# Cmp" and "## Results" not in lines  # results.csv left out
    assert lines[-1] == "<!-- written by contrastkit-compare -->"  # not shown by markdown
    assert report_written_by(report) == "contrastkit-compare"
    plain = write_report(tmp_path, title="Probe")
    assert "## Results" in plain.read_text() and report_written_by(plain) is None
    assert report_written_by(tmp_path / "missing.md") is None


def _probe_summary(model_section: dict) -> str:
    from contrastkit.backbones import LinearClassifier, create_backbone
    from contrastkit.pipelines.data import InMemoryDataset
    from contrastkit.pipelines.evaluation.pretrained import PretrainedCheckpoint
    from contrastkit.pipelines.evaluation.report import probe_summary_markdown

    backbone = create_backbone("mlp", in_features=4, width=8, num_layers=1)
    config = {"method": {"name": "moco"}, "model": {"backbone": "mlp", **model_section}}
    checkpoint = PretrainedCheckpoint(Path("ck"), config, {"step": 1, "epoch": 1})
    data = InMemoryDataset(torch.zeros(3, 4), torch.zeros(3, dtype=torch.int64), ["a"], "tabular")
    head = LinearClassifier(backbone.num_features, 1)
    return probe_summary_markdown(checkpoint, backbone, head, data)


def test_probe_summary_draws_the_projection_head_the_pretraining_built() -> None:
    # i-Mix's mlpbn head: Linear(8, 16, no bias) -> BN(16) -> ReLU -> Linear(16, 4, no bias) -> BN(4).
    section = {
        "projection_hidden_dim": 16,
        "projection_dim": 4,
        "projection_output_batch_norm": True,
    }
    summary = _probe_summary(section)
    expected = 8 * 16 + 2 * 16 + 16 * 4 + 2 * 4
    assert "projection head used in moco pretraining" in summary
    assert f"| **Total** | | **{expected:,}**" in summary
    # ISD's preset has no projection head: no table for one.
    none = _probe_summary({"projection_dim": 4, "projection_layers": 0})
    assert "projection head" not in none
