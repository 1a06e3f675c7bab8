"""Run records as plain CSV: the shared results.csv (one row per run), per-epoch history CSVs, and
the results table in markdown, so results stay readable and diffable without this package.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from contrastkit.pipelines.atomic import write_text_atomic

# The columns every results.csv starts with, in this order; rows may add more after them.
RESULTS_COLUMNS: tuple[str, ...] = (
    "method",
    "backbone",
    "epochs",
    "knn_top1",
    "linear_top1",
    "wall_s",
)


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


def read_csv_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a UTF-8 CSV file with a header line; each row maps column -> text."""
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Mapping[str, str]]) -> None:
    # Built in memory, then written in one atomic step: readers never see half a table.
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key, "") for key in header})
    write_text_atomic(path, buffer.getvalue())


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

    header, rows = read_csv_table(path) if path.is_file() and path.stat().st_size else ([], [])
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
    return read_csv_table(path)[1]


def markdown_cell(text: str) -> str:
    """`text` as one markdown table cell: pipes escaped, newlines as spaces."""
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
    header, rows = read_csv_table(path)
    if columns is None:
        columns = header
    unknown = [name for name in columns if name not in header]
    if unknown:
        raise ValueError(f"columns {unknown} are not in {path} (it has {header})")
    lines = [
        "| " + " | ".join(markdown_cell(name) for name in columns) + " |",
        "|" + "|".join(" --- " for _ in columns) + "|",
    ]
    for row in rows:
        cells = [
            markdown_cell(_format_number_cell(row.get(name) or "", digits)) for name in columns
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
    _, rows = read_csv_table(source)
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
