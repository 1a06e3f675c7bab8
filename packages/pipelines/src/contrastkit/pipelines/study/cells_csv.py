"""cells.csv of a study's output folder: one row per (cell, seed), in the order the runs finished.

The runner appends a row only once a run and its evaluation are complete, by rewriting the whole
file atomically, so an interrupted study never leaves a half-written row behind.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from contrastkit.pipelines.atomic import write_text_atomic

CELLS_FILE = "cells.csv"

# The columns, in order: the ten, then what a study adds. An empty string is a value that
# does not apply (a joint cell has no probe; a pretrain cell has no validation split).
CELL_COLUMNS: tuple[str, ...] = (
    "study",
    "cell",
    "seed",
    "method",
    "imix",
    "backbone",
    "epochs",
    "knn_top1",
    "linear_top1",
    "wall_s",
    "profile",
    "task",
    "probe",
    "label_fraction",
    "val_top1",
    "pretrain_s",
    "probe_s",
    "run_dir",
)


def read_cell_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a cells.csv as dicts of strings ([] when the file does not exist).

    ValueError naming the file when its header is not CELL_COLUMNS, and the file and line when a
    row has a different number of fields or a seed that is not an int >= 0.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path}: empty file; expected the header {','.join(CELL_COLUMNS)}")
    if tuple(header) != CELL_COLUMNS:
        raise ValueError(
            f"{path}: line 1: header {','.join(header)!r} is not the cells.csv header "
            f"{','.join(CELL_COLUMNS)!r}; this folder was not written by contrastkit-study "
            "(choose another --output-dir)"
        )
    rows: list[dict[str, str]] = []
    for number, fields in enumerate(reader, start=2):
        if len(fields) != len(CELL_COLUMNS):
            raise ValueError(
                f"{path}: line {number}: {len(fields)} fields, expected {len(CELL_COLUMNS)} "
                f"({','.join(CELL_COLUMNS)})"
            )
        row = dict(zip(CELL_COLUMNS, fields, strict=True))
        if not row["seed"].isdigit():
            raise ValueError(f"{path}: line {number}: seed {row['seed']!r} is not an int >= 0")
        rows.append(row)
    return rows


def format_value(value: Any) -> str:
    """A cell of cells.csv: "" for None, floats rounded to 4 decimals, anything else as str."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(round(value, 4))
    return str(value)


def append_cell_row(path: str | Path, row: Mapping[str, Any]) -> list[dict[str, str]]:
    """Append `row` (exactly the CELL_COLUMNS keys) to the cells.csv at `path` by rewriting the
    file atomically; returns every row now in it."""
    if set(row) != set(CELL_COLUMNS):
        missing = sorted(set(CELL_COLUMNS) - set(row))
        extra = sorted(set(row) - set(CELL_COLUMNS))
        raise ValueError(f"a cells.csv row needs exactly {list(CELL_COLUMNS)}: missing "
                         f"{missing}, unknown {extra}")  # fmt: skip
    rows = read_cell_rows(path)
    rows.append({name: format_value(row[name]) for name in CELL_COLUMNS})
    write_text_atomic(path, rows_to_csv(rows))
    return rows


def rows_to_csv(rows: Sequence[Mapping[str, str]]) -> str:
    """The text of a cells.csv holding `rows`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CELL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def done_pairs(rows: Sequence[Mapping[str, str]]) -> set[tuple[str, int]]:
    """The (cell, seed) pairs that already have a row."""
    return {(row["cell"], int(row["seed"])) for row in rows}
