"""Run records on disk: the shared results.csv, per-epoch history CSVs, markdown tables and report.md.

Plain CSV and markdown so results stay readable and diffable without this package.
"""

from __future__ import annotations

import csv
import math
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# The columns every results.csv starts with, in this order; rows may add more after them.
RESULTS_COLUMNS: tuple[str, ...] = (
    "method",
    "backbone",
    "epochs",
    "knn_top1",
    "linear_top1",
    "wall_s",
)

# Figures `write_report` picks up from the report folder by name, in this order, with captions.
FIGURE_CAPTIONS: dict[str, str] = {
    "curves.png": "Pretraining: loss, learning rate and kNN accuracy",
    "probe_curves.png": "Linear probe: loss and accuracy per epoch",
    "compare.png": "Runs compared: validation accuracy and loss",
    "tsne.png": "t-SNE of test features, coloured by class",
    "nn_grid.png": "Nearest train neighbours of test queries (green: same class, red: different)",
}


def _write_text_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden unique name in the same folder, then an atomic rename; plain open() keeps the
    # usual umask permissions (mkstemp would make the file 0600).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("x", encoding="utf-8", newline="") as file:
            file.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _format_value(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"a results value must be a scalar, got a tensor of shape {tuple(value.shape)}"
            )
        value = value.item()
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()  # numpy scalars
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float
    return str(value)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Mapping[str, str]]) -> None:
    lines: list[str] = []

    class _Collect:
        def write(self, text: str) -> None:
            lines.append(text)

    writer = csv.DictWriter(_Collect(), fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in header})
    _write_text_atomically(path, "".join(lines))


def append_results(results_csv: str | Path, row: Mapping[str, Any]) -> Path:
    """Append one run's results as a row of `results_csv`, creating the file if needed.

    A new file's header is RESULTS_COLUMNS followed by the row's other keys in their order.
    An existing header is kept; keys it lacks are added at the end and the file is rewritten
    (atomically, older rows get empty cells there). Missing values are written as empty
    cells. Floats are written exactly (repr), scalar tensors / numpy scalars as their value.

    Args:
        results_csv: path of the CSV (its folder is created).
        row: column name -> value (str, number, bool, None, or scalar tensor).

    Returns:
        the path written.
    """
    path = Path(results_csv)
    if not isinstance(row, Mapping) or not row:
        raise ValueError(f"row must be a non-empty mapping of column -> value, got {row!r}")
    for key in row:
        if not isinstance(key, str) or not key.strip() or "\n" in key:
            raise ValueError(
                f"results column names must be non-empty one-line strings, got {key!r}"
            )
    values = {key: _format_value(value) for key, value in row.items()}

    header, rows = _read_csv(path) if path.is_file() and path.stat().st_size else ([], [])
    if not header:
        header = list(RESULTS_COLUMNS)
    new_columns = [key for key in values if key not in header]
    if new_columns or not path.is_file() or not path.stat().st_size:
        _write_csv(path, header + new_columns, [*rows, values])
        return path
    # Header unchanged: a plain append keeps concurrent readers' view consistent line by line.
    with path.open("a", newline="", encoding="utf-8") as file:
        csv.DictWriter(file, fieldnames=header, lineterminator="\n").writerow(
            {key: values.get(key, "") for key in header}
        )
    return path


def read_results(results_csv: str | Path) -> list[dict[str, str]]:
    """Rows of a results.csv as dicts of strings (empty string for an empty cell)."""
    path = Path(results_csv)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    return _read_csv(path)[1]


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _format_number_cell(text: str, digits: int) -> str:
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number) or (
        number.is_integer() and "." not in text and "e" not in text.lower()
    ):
        return text  # ints and nan/inf as written
    return f"{number:.{digits}f}"


def results_table_markdown(
    results_csv: str | Path, *, columns: Sequence[str] | None = None, digits: int = 2
) -> str:
    """The results CSV as a markdown table; decimal numbers rounded to `digits` places.

    Args:
        results_csv: path of a CSV written by `append_results`.
        columns: columns to show, in order (default: all, in file order); unknown names raise.
        digits: decimals for non-integer numbers.

    Returns:
        markdown text ending in a newline (header row, alignment row, one row per run).
    """
    path = Path(results_csv)
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    header, rows = _read_csv(path)
    if columns is None:
        columns = header
    unknown = [name for name in columns if name not in header]
    if unknown:
        raise ValueError(f"columns {unknown} are not in {path} (it has {header})")
    lines = [
        "| " + " | ".join(_markdown_cell(name) for name in columns) + " |",
        "|" + "|".join(" --- " for _ in columns) + "|",
    ]
    for row in rows:
        cells = [
            _markdown_cell(_format_number_cell(row.get(name) or "", digits)) for name in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_history_csv(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write per-epoch records (e.g. LinearProbeResult.history) as a CSV, atomically.

    The header is the union of the records' keys in first-seen order.
    """
    if not isinstance(history, Sequence) or not all(isinstance(r, Mapping) for r in history):
        raise ValueError(f"history must be a sequence of dicts, got {type(history).__name__}")
    header: list[str] = []
    for record in history:
        header.extend(key for key in record if key not in header)
    rows = [{key: _format_value(value) for key, value in record.items()} for record in history]
    out = Path(path)
    _write_csv(out, header, rows)
    return out


def read_history_csv(path: str | Path) -> list[dict[str, float]]:
    """Per-epoch records from a CSV: every cell as a float (empty cells -> nan)."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"history file not found: {source}")
    _, rows = _read_csv(source)
    history = []
    for line, row in enumerate(rows, start=2):
        record = {}
        for key, text in row.items():
            try:
                record[key] = float(text) if text not in ("", None) else math.nan
            except ValueError:
                raise ValueError(
                    f"{source} line {line}: column {key!r} holds {text!r}, not a number"
                ) from None
        history.append(record)
    return history


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
        lines.append(f"| {_markdown_cell(str(layer))} | {_format_shape(shape)} | {int(params):,} |")
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
    return f"![{_markdown_cell(caption)}]({link})"


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
    table_source = Path(results_csv) if results_csv is not None else folder / "results.csv"
    if results_csv is not None and not table_source.is_file():
        raise FileNotFoundError(f"results_csv not found: {table_source}")
    if table_source.is_file():
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

    report = folder / "report.md"
    _write_text_atomically(report, "\n".join(parts).rstrip("\n") + "\n")
    return report
