"""report.md: a results table, free sections (text, images), every figure of the folder, and the
model summary tables, plus the probe's own report pieces. Markdown, so it reads anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from contrastkit.backbones import model_summary
from contrastkit.pipelines.atomic import write_text_atomic
from contrastkit.pipelines.config import ModelConfig
from contrastkit.pipelines.evaluation.finetune import BackboneWithHead
from contrastkit.pipelines.evaluation.results import markdown_cell, results_table_markdown
from contrastkit.pipelines.methods.base import projection_head
from contrastkit.pipelines.run_files import (
    COMPARE_FILE,
    CURVES_FILE,
    NN_GRID_FILE,
    PROBE_CURVES_FILE,
    REPORT_FILE,
    RESULTS_FILE,
    TSNE_FILE,
)

if TYPE_CHECKING:
    from contrastkit.pipelines.data import InMemoryDataset
    from contrastkit.pipelines.evaluation.pretrained import PretrainedCheckpoint

# Figures `write_report` picks up from the report folder by name, in this order, with captions.
FIGURE_CAPTIONS: dict[str, str] = {
    CURVES_FILE: "Pretraining: loss, learning rate and kNN accuracy",
    PROBE_CURVES_FILE: "Linear probe: loss and accuracy per epoch",
    COMPARE_FILE: "Runs compared: validation accuracy and loss",
    TSNE_FILE: "t-SNE of test features, coloured by class",
    NN_GRID_FILE: "Nearest train neighbours of test queries (green: same class, red: different)",
}


def _format_shape(shape: Any) -> str:
    if shape is None:
        return "-"
    if isinstance(shape, list):
        return "[" + ", ".join(_format_shape(item) for item in shape) + "]"
    if isinstance(shape, tuple | torch.Size):
        return "(" + ", ".join(str(dim) for dim in shape) + ")"
    return str(shape)


def model_summary_markdown(summary: Any) -> str:
    """A model summary as a markdown table: layer, output shape, parameters, then the totals.

    Args:
        summary: the object `contrastkit.backbones.model_summary(model, input_size)` returns:
            `.rows` of (layer name, output shape, parameter count); `model_name`,
            `input_size`, `total_params`, `trainable_params` are used when present (the
            total falls back to the sum over rows).

    Returns:
        markdown text ending in a newline.
    """
    rows = getattr(summary, "rows", None)
    if rows is None or not all(isinstance(r, Sequence) and len(r) == 3 for r in rows):
        raise ValueError(
            "summary must have .rows, a list of (layer, output shape, parameters) triples "
            f"(as contrastkit.backbones.model_summary returns), got {type(summary).__name__}"
        )
    lines = []
    name = getattr(summary, "model_name", None)
    input_size = getattr(summary, "input_size", None)
    if name is not None or input_size is not None:
        caption = f"**{name or 'model'}**"
        if input_size is not None:
            caption += f", input {_format_shape(tuple(input_size))}"
        lines += [caption, ""]
    lines += ["| Layer | Output shape | Parameters |", "| --- | --- | ---: |"]
    for layer, shape, params in rows:
        lines.append(f"| {markdown_cell(str(layer))} | {_format_shape(shape)} | {int(params):,} |")
    total = getattr(summary, "total_params", None)
    total = sum(int(r[2]) for r in rows) if total is None else int(total)
    trainable = getattr(summary, "trainable_params", None)
    extra = f" (trainable {int(trainable):,})" if trainable is not None else ""
    lines.append(f"| **Total** | | **{total:,}**{extra} |")
    return "\n".join(lines) + "\n"


@dataclass
class ReportSection:
    """One `## heading` of report.md: markdown text, then images (missing files are skipped).

    `images` are paths to PNGs, absolute or relative to the report folder; each may be a
    (path, caption) pair.
    """

    heading: str
    text: str = ""
    images: Sequence[str | Path | tuple[str | Path, str]] = field(default_factory=tuple)


def _image_markdown(image: Path, out_dir: Path, caption: str) -> str:
    link = Path(os.path.relpath(image, out_dir)).as_posix()
    if any(ch in link for ch in " ()<>"):
        link = f"<{link}>"
    return f"![{markdown_cell(caption)}]({link})"


def _resolve(image: str | Path, out_dir: Path) -> Path:
    path = Path(image)
    return (path if path.is_absolute() else out_dir / path).resolve()


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    sections: Sequence[ReportSection] = (),
    results_csv: str | Path | None = None,
    include_figures: bool = True,
    include_results: bool = True,
    written_by: str | None = None,
    file_name: str = REPORT_FILE,
) -> Path:
    """Write `out_dir/report.md` (atomically) and return its path.

    Layout: `# title`; a "Results" table from `results_csv` (default `out_dir/results.csv`,
    skipped when absent); the given sections in order; then, when `include_figures`, a
    "Figures" section embedding every PNG in `out_dir` not already shown: the names of
    FIGURE_CAPTIONS first (in that order, with their captions), then any other PNGs by name.
    Images are linked relative to `out_dir`, so the folder can be moved or published as is.

    Args:
        out_dir: the report folder (created if needed).
        title: the report's title.
        sections: extra sections (text such as `model_summary_markdown(...)`, images).
        results_csv: results file to tabulate; None means `out_dir/results.csv` if present.
        include_figures: embed the PNGs found in `out_dir`.
        include_results: False leaves the "Results" table out (results_csv is then ignored).
        written_by: the command writing the report, recorded in a last line that markdown does
            not show (`<!-- written by NAME -->`; `report_written_by` reads it back).
        file_name: the report's file name in `out_dir`.
    """
    folder = Path(out_dir)
    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"title must be a non-empty string, got {title!r}")
    for section in sections:
        if not isinstance(section, ReportSection):
            raise ValueError(
                f"sections must hold ReportSection objects, got {type(section).__name__}"
            )
    folder.mkdir(parents=True, exist_ok=True)
    root = folder.resolve()

    parts = [f"# {title.strip()}", ""]
    table_source = Path(results_csv) if results_csv is not None else folder / RESULTS_FILE
    if include_results and results_csv is not None and not table_source.is_file():
        raise FileNotFoundError(f"results_csv not found: {table_source}")
    if include_results and table_source.is_file():
        parts += ["## Results", "", results_table_markdown(table_source)]

    shown: set[Path] = set()
    for section in sections:
        parts += [f"## {section.heading}", ""]
        if section.text:
            parts += [section.text.rstrip("\n"), ""]
        for entry in section.images:
            image, caption = entry if isinstance(entry, tuple) else (entry, Path(entry).stem)
            path = _resolve(image, root)
            if path.is_file():
                parts += [_image_markdown(path, root, caption), ""]
                shown.add(path)

    if include_figures:
        found = sorted(p.resolve() for p in root.glob("*.png") if not p.name.startswith("."))
        known = [root / name for name in FIGURE_CAPTIONS if (root / name) in found]
        others = [p for p in found if p.name not in FIGURE_CAPTIONS]
        figures = [p for p in known + others if p not in shown]
        if figures:
            parts += ["## Figures", ""]
            for path in figures:
                caption = FIGURE_CAPTIONS.get(path.name, path.stem)
                parts += [f"### {caption}", "", _image_markdown(path, root, caption), ""]

    if written_by is not None:
        parts += [f"{_WRITTEN_BY_PREFIX}{written_by}{_WRITTEN_BY_SUFFIX}"]
    return write_text_atomic(folder / file_name, "\n".join(parts).rstrip("\n") + "\n")


_WRITTEN_BY_PREFIX = "<!-- written by "
_WRITTEN_BY_SUFFIX = " -->"


def report_written_by(report_md: str | Path) -> str | None:
    """The command a report says wrote it (`write_report(..., written_by=NAME)`), else None
    (also for a missing or unreadable file)."""
    try:
        lines = Path(report_md).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    last = lines[-1].strip() if lines else ""
    if last.startswith(_WRITTEN_BY_PREFIX) and last.endswith(_WRITTEN_BY_SUFFIX):
        return last[len(_WRITTEN_BY_PREFIX) : -len(_WRITTEN_BY_SUFFIX)]
    return None


# --------------------------------------------------------------------------------------------
# The probe's report: its model summary and its "This run" table


def probe_summary_markdown(
    checkpoint: PretrainedCheckpoint, backbone: nn.Module, head: nn.Module, data: InMemoryDataset
) -> str:
    """Model summary tables (layer, output shape, parameters): backbone + classifier, then the
    pretraining projection head the config describes (its shape, not its trained weights)."""
    input_size = (1, *data.inputs.shape[1:])
    was_training = backbone.training
    probe_model = BackboneWithHead(backbone, head).cpu()
    summary = model_summary(probe_model, input_size, dtype=torch.float32, device="cpu")
    summary.model_name = f"{checkpoint.backbone_name} + linear classifier"
    parts = [model_summary_markdown(summary)]
    model = checkpoint.config.get("model") or {}
    if "projection_dim" in model and hasattr(backbone, "num_features"):
        # The head as the pretraining built it, from the same rule (a run without a head: none).
        try:
            projection = projection_head(ModelConfig(**model), int(backbone.num_features))
        except (ValueError, TypeError):
            projection = None
        if projection is not None and not isinstance(projection, nn.Identity):
            head_summary = model_summary(projection, (1, int(backbone.num_features)))
            head_summary.model_name = f"projection head used in {checkpoint.method} pretraining"
            parts.append(model_summary_markdown(head_summary))
    backbone.train(was_training)
    return "\n".join(parts)


RANDOM_INIT = "random_init"
"""results.csv's method of a probe of the freshly initialized network (contrastkit-probe
--random-init)."""

# What each probe mode trains, as the report's "This run" table says it.
_MODE_DESCRIPTIONS = {
    "linear": "frozen backbone, cached features",
    "augment": "frozen backbone, augmented views",
    "finetune": "whole network fine-tuned",
}


def write_probe_report(
    output_dir: Path,
    row: Mapping[str, Any],
    knn: Mapping[int, Mapping[str, float]],
    summary: str,
    *,
    num_train: int,
    num_labelled: int,
    num_test: int,
) -> Path:
    """The probe's report.md: the results table, "This run" (the results row and every kNN k,
    in words), the model summary, then the figures of `output_dir`.

    Args:
        row: the results row the probe appended (checkpoint, step, epochs, method, backbone,
            pretrain_dataset, mode, solver, probe_epochs, lr, dataset, label_fraction,
            linear_top1, top5, wall_s).
        knn: k -> {"top1", "top5"} of the weighted kNN on the pretrained features.
        summary: `probe_summary_markdown(...)`.
    """
    untrained = row["method"] == RANDOM_INIT
    source = (
        f"none: the network of `{row['checkpoint']}` freshly initialized (--random-init, seed "
        f"{row['seed']}), {row['backbone']}, its config's {row['pretrain_dataset']} input"
        if untrained
        else f"{row['method']}, {row['backbone']} on {row['pretrain_dataset']}"
    )
    lines = [
        "| | |",
        "| --- | --- |",
        f"| checkpoint | `{row['checkpoint']}` (step {row['step']}, epoch {row['epochs']}) |",
        f"| pretraining | {source} |",
        f"| probe | {row['mode']} ({_MODE_DESCRIPTIONS[row['mode']]}), solver {row['solver']}, "
        f"{row['probe_epochs']} epochs, lr {row['lr']} |",
        f"| data | {row['dataset']}: {num_labelled} labelled of {num_train} train samples "
        f"(label fraction {row['label_fraction']}), {num_test} test samples |",
        f"| classifier | top-1 {row['linear_top1']:.2f} %, top-5 {row['top5']:.2f} % |",
    ]
    for k, accuracy in sorted(knn.items()):
        lines.append(
            f"| kNN k={k} | top-1 {accuracy['top1']:.2f} %, top-5 {accuracy['top5']:.2f} % |"
        )
    lines.append(f"| wall time | {row['wall_s']:.1f} s |")
    note = (
        f"kNN, t-SNE and the neighbour grid use the {'untrained' if untrained else 'pretrained'} "
        "backbone's features (identity view, cached in the checkpoint folder), whatever the "
        "probe mode."
    )
    sections = [
        ReportSection("This run", "\n".join(lines) + "\n\n" + note),
        ReportSection("Model summary", summary),
    ]
    title = f"Probe: {row['method']} {row['backbone']} on {row['dataset']}"
    return write_report(output_dir, title=title, sections=sections, written_by="contrastkit-probe")
