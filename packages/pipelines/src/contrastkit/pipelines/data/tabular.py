"""Numeric CSV tables for `contrastkit.pipelines.data`: plain or gzip CSV files read into float32
features and int64 labels, with held-out rows, train-only standardization and label encoding."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

STANDARDIZE_RULES: tuple[str, ...] = ("nonbinary", "all", "none")
TABULAR_OPTIONS: tuple[str, ...] = (
    "label_column",
    "drop_columns",
    "val_start",
    "val_fraction",
    "split_seed",
    "standardize",
    "delimiter",
)


_GZIP_MAGIC = b"\x1f\x8b"


def _read_lines(path: Path) -> list[str]:
    """The file's text lines (gzip detected by its first two bytes), trailing blank lines dropped.

    A file named *.gz that is not gzip, a damaged gzip stream and text that is not UTF-8 are
    ValueErrors naming the file (not a parse error about the garbage read from it)."""
    with open(path, "rb") as file:
        is_gzip = file.read(2) == _GZIP_MAGIC
    if path.suffix.lower() == ".gz" and not is_gzip:
        raise ValueError(
            f"{path} is not a gzip file (it does not start with the gzip bytes 1f 8b); "
            "re-compress it with gzip, or drop the .gz from its name if it is a plain CSV"
        )
    opener = gzip.open if is_gzip else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as file:
            lines = file.read().splitlines()
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path} is a damaged gzip file: {error}") from None
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {error.start}: {error.reason}); save it as UTF-8 CSV"
        ) from None
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def read_tabular(
    path: Path,
    split: str,
    *,
    label_column: str | None = None,
    drop_columns: Sequence[str] = (),
    val_start: int | None = None,
    val_fraction: float | None = None,
    split_seed: int = 0,
    standardize: str = "nonbinary",
    delimiter: str = ",",
) -> tuple[Tensor, Tensor, list[str]]:
    """Features float32 (N, F), labels int64 (N,) in 0..C-1, class names (label values as strings).

    The options are those of `load_dataset("tabular", ...)`; mean and std come from the train rows only.
    """
    _check_options(split, standardize, delimiter, val_start, val_fraction, split_seed, drop_columns)
    if not path.is_file():
        raise FileNotFoundError(
            f"tabular data_dir must be a CSV or CSV.gz file; {path} is not a file"
        )
    features, raw_labels = _read_table(path, delimiter, label_column, drop_columns)
    train_mask = _train_rows(len(raw_labels), split, val_start, val_fraction, split_seed)
    selected = train_mask if split == "train" else ~train_mask
    out = _standardized(features, train_mask, selected, standardize)
    labels, classes = _encode_labels(path, raw_labels[train_mask], raw_labels[selected])
    return torch.from_numpy(out.astype(np.float32)), torch.from_numpy(labels), classes


def _check_options(
    split: str,
    standardize: str,
    delimiter: str,
    val_start: int | None,
    val_fraction: float | None,
    split_seed: int,
    drop_columns: Sequence[str],
) -> None:
    """The checks that need no file (val_start's range needs the row count: see `_train_rows`)."""
    if split not in ("train", "test", "val"):
        raise ValueError(f"split must be 'train', 'test' or 'val' for tabular, got {split!r}")
    if standardize not in STANDARDIZE_RULES:
        raise ValueError(f"standardize must be one of {STANDARDIZE_RULES}, got {standardize!r}")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\"'\n\r":
        raise ValueError(f"delimiter must be a single character such as ',', got {delimiter!r}")
    if val_fraction is not None and (
        isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float))
    ):
        raise ValueError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int):
        raise ValueError(f"split_seed must be an int, got {split_seed!r}")
    if val_start is not None and val_fraction is not None:
        raise ValueError(
            f"give val_start or val_fraction, not both (got {val_start} and {val_fraction})"
        )
    if isinstance(drop_columns, str):
        raise ValueError(
            f"drop_columns must be a list of column names, got the string {drop_columns!r}"
        )


def _read_table(
    path: Path, delimiter: str, label_column: str | None, drop_columns: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Every data row of the file: features float64 (N, F) and the label column as strings (N,)."""
    lines = _read_lines(path)
    if len(lines) < 2:
        found = "the file is empty" if not lines else "it has only a header line"
        raise ValueError(f"{path} needs a header line and at least one data row; {found}")
    columns = [_unquote(name) for name in lines[0].split(delimiter)]
    rows = lines[1:]
    for row_number, row in enumerate(rows, start=2):
        if row.count(delimiter) != len(columns) - 1:
            raise ValueError(
                f"{path} line {row_number} has {row.count(delimiter) + 1} fields, the header has {len(columns)}"
            )

    label_name = columns[-1] if label_column is None else label_column
    unknown = [name for name in [label_name, *drop_columns] if name not in columns]
    if unknown:
        raise ValueError(f"{path}: unknown column(s) {unknown}; available columns: {columns}")
    if label_name in drop_columns:
        raise ValueError(
            f"label_column {label_name!r} is also listed in drop_columns={list(drop_columns)}"
        )
    label_index = columns.index(label_name)
    feature_indices = [
        i for i, name in enumerate(columns) if i != label_index and name not in drop_columns
    ]
    if not feature_indices:
        raise ValueError(
            f"{path}: no feature columns left after dropping {list(drop_columns)} and the label"
        )

    try:
        features = np.loadtxt(
            rows,
            delimiter=delimiter,
            usecols=feature_indices,
            dtype=np.float64,
            comments=None,
            ndmin=2,
        )
    except ValueError as error:
        message = _first_bad_cell(path, rows, delimiter, columns, feature_indices)
        raise ValueError(message or f"{path}: feature columns must be numeric: {error}") from None
    bad_rows, bad_columns = np.nonzero(~np.isfinite(features))
    if len(bad_rows):
        row, column = bad_rows[0], feature_indices[bad_columns[0]]
        raise ValueError(
            f"{path} line {row + 2}, column {columns[column]!r}: value {features[row, bad_columns[0]]} "
            f"is not finite; features must be finite numbers"
        )
    raw_labels = np.array(
        [
            _unquote(v)
            for v in np.loadtxt(
                rows, delimiter=delimiter, usecols=[label_index], dtype=str, comments=None, ndmin=1
            )
        ]
    )
    empty = np.nonzero(raw_labels == "")[0]
    if len(empty):
        raise ValueError(f"{path} line {empty[0] + 2}: the label column {label_name!r} is empty")
    return features, raw_labels


def _first_bad_cell(
    path: Path, rows: list[str], delimiter: str, columns: list[str], feature_indices: list[int]
) -> str | None:
    """The message for the first feature cell that is not a number, by file line (1-based, the
    header is line 1, as an editor shows it) and column name; None if Python reads every cell.
    Only run once numpy has failed, so the common case pays nothing."""
    for row_number, row in enumerate(rows, start=2):
        cells = row.split(delimiter)
        for index in feature_indices:
            text = _unquote(cells[index])
            try:
                float(text)
            except ValueError:
                found = "is empty" if not text else f"is {text!r}"
                return (
                    f"{path} line {row_number}, column {columns[index]!r}: the cell {found}; "
                    "feature columns must be numeric (fill the cell, or list the column in drop_columns)"
                )
    return None


def _train_rows(
    num_rows: int,
    split: str,
    val_start: int | None,
    val_fraction: float | None,
    split_seed: int,
) -> np.ndarray:
    """bool (num_rows,): True for the train rows, False for the held-out ones."""
    train_mask = np.ones(num_rows, dtype=bool)
    if val_start is not None:
        if (
            isinstance(val_start, bool)
            or not isinstance(val_start, (int, np.integer))
            or not 0 < val_start < num_rows
        ):
            raise ValueError(
                f"val_start must be an int in 1..{num_rows - 1} (the file has {num_rows} rows), got {val_start!r}"
            )
        train_mask[val_start:] = False
    elif val_fraction is not None:
        held_out = round(num_rows * float(val_fraction))
        if not 0 < float(val_fraction) < 1 or not 0 < held_out < num_rows:
            raise ValueError(
                f"val_fraction must be in (0, 1) and leave at least one row in each split "
                f"({num_rows} rows), got {val_fraction!r}"
            )
        generator = torch.Generator().manual_seed(split_seed)
        train_mask[torch.randperm(num_rows, generator=generator)[:held_out].numpy()] = False
    elif split != "train":
        raise ValueError(
            f"tabular split {split!r} needs val_start or val_fraction to define the held-out rows"
        )
    return train_mask


def _standardized(
    features: np.ndarray, train_mask: np.ndarray, selected: np.ndarray, standardize: str
) -> np.ndarray:
    """float64 (M, F): the `selected` rows (bool (N,)) of features (N, F), the columns the rule picks
    z-scored with the train rows' mean and std (ddof=0)."""
    train_features = features[train_mask]
    mean, std = train_features.mean(axis=0), train_features.std(axis=0)
    if standardize == "none":
        scaled_columns = np.zeros(features.shape[1], dtype=bool)
    else:
        scaled_columns = std > 0
        if standardize == "nonbinary":
            binary = np.all((train_features == 0) | (train_features == 1), axis=0)
            scaled_columns &= ~binary
    out = features[selected]
    out[:, scaled_columns] = (out[:, scaled_columns] - mean[scaled_columns]) / std[scaled_columns]
    return out


def _encode_labels(
    path: Path, train_raw: np.ndarray, split_raw: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Map label values to 0..C-1 in sorted order of the train split's values (numeric order when all are ints)."""
    try:
        train_values, split_values = train_raw.astype(np.int64), split_raw.astype(np.int64)
    except ValueError:
        train_values, split_values = train_raw, split_raw
    values = np.unique(train_values)
    positions = np.clip(np.searchsorted(values, split_values), 0, len(values) - 1)
    unseen = split_values[values[positions] != split_values]
    if unseen.size:
        raise ValueError(
            f"{path}: label value {unseen[0].item()!r} does not occur in the train split (train has {values.tolist()})"
        )
    return positions.astype(np.int64), [str(v) for v in values.tolist()]
