"""File readers behind `contrastkit.pipelines.data`: CIFAR (npz folder and torchvision pickle
formats), image folders (torchvision.io decode + resize) and numeric CSV tables, all returned as tensors."""

from __future__ import annotations

import gzip
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR_SPLITS: tuple[str, ...] = ("train", "test")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".gif", ".webp")
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

_CIFAR_PIXELS = 3 * 32 * 32


# ----------------------------------------------------------------------------------------------
# CIFAR
# ----------------------------------------------------------------------------------------------
class _Format:
    """One on-disk CIFAR layout: the files a split needs and the directories they may sit in."""

    def __init__(
        self, description: str, is_npz: bool, directories: list[Path], files: list[str]
    ) -> None:
        self.description = description
        self.is_npz = is_npz
        self.directories = directories
        self.files = files

    def find(self) -> Path | None:
        for directory in self.directories:
            if all((directory / name).is_file() for name in self.files):
                return directory
        return None

    def explain(self) -> list[str]:
        lines = [f"  {self.description} ({', '.join(self.files)}):"]
        for directory in self.directories:
            if not directory.is_dir():
                lines.append(f"    {directory}: directory does not exist")
                continue
            missing = [
                str(directory / name) for name in self.files if not (directory / name).is_file()
            ]
            lines.append(f"    {directory}: missing " + ", ".join(missing))
        return lines


def _cifar_formats(name: str, data_dir: Path, split: str) -> list[_Format]:
    if name == "cifar10":
        batches = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        npz = (
            [f"cifar10_train_{i}.npz" for i in range(1, 6)]
            if split == "train"
            else ["cifar10_test.npz"]
        )
        return [
            # The torchvision pickles hold the original pixels, so they win when both exist
            # (the npz copy has 104 JPEG-approximated images, see shared/data/cifar10/README.md).
            _Format(
                "torchvision pickle format",
                False,
                [data_dir / "cifar-10-batches-py", data_dir],
                [*batches, "batches.meta"],
            ),
            _Format("npz folder format", True, [data_dir, data_dir / "cifar10"], npz),
        ]
    return [
        _Format(
            "torchvision pickle format",
            False,
            [data_dir / "cifar-100-python", data_dir],
            [split, "meta"],
        )
    ]


def read_cifar(
    name: str, data_dir: Path, split: str, download: bool
) -> tuple[Tensor, Tensor, list[str]]:
    """Images uint8 (N, 3, 32, 32), labels int64 (N,), class names of CIFAR-10 or CIFAR-100 (fine labels)."""
    if split not in CIFAR_SPLITS:
        raise ValueError(f"split must be one of {CIFAR_SPLITS} for {name}, got {split!r}")
    formats = _cifar_formats(name, data_dir, split)
    found = [(fmt, fmt.find()) for fmt in formats]
    if all(directory is None for _, directory in found) and download:
        _download_cifar(name, data_dir, split)
        found = [(fmt, fmt.find()) for fmt in formats]
    for fmt, directory in found:
        if directory is None:
            continue
        if fmt.is_npz:
            return _read_cifar10_npz(directory, fmt.files)
        return _read_cifar_pickle(name, directory, fmt.files)
    lines = [f"{name} split {split!r} not found under data_dir={str(data_dir)!r}. Looked for:"]
    for fmt in formats:
        lines.extend(fmt.explain())
    lines.append(
        f"Point data_dir at a folder holding one of these formats, or pass download=True to let "
        f"torchvision download the pickle format into {data_dir}."
    )
    raise FileNotFoundError("\n".join(lines))


def _download_cifar(name: str, data_dir: Path, split: str) -> None:
    import torchvision.datasets

    dataset_class = (
        torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    )
    dataset_class(root=str(data_dir), train=split == "train", download=True)


def _check_cifar_arrays(
    path: Path, images: np.ndarray, labels: np.ndarray, num_classes: int
) -> None:
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{path} is not a valid CIFAR file: {images.shape[0]} images but labels of shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path} is not a valid CIFAR file: labels have dtype {labels.dtype}, expected integers"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{path} is not a valid CIFAR file: labels span [{labels.min()}, {labels.max()}], "
            f"expected 0..{num_classes - 1}"
        )


def _read_cifar10_npz(directory: Path, files: list[str]) -> tuple[Tensor, Tensor, list[str]]:
    images, labels = [], []
    for name in files:
        path = directory / name
        try:
            archive = np.load(path, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError(f"it holds a single {type(archive).__name__}, not an npz archive")
            with archive:
                arrays = {key: archive[key] for key in ("x", "y") if key in archive.files}
                keys = archive.files
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path} is not a valid CIFAR npz file: {error}") from error
        if len(arrays) != 2:
            raise ValueError(
                f"{path} is not a valid CIFAR npz file: it holds arrays {keys}, expected x and y"
            )
        x, y = arrays["x"], arrays["y"]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            raise ValueError(
                f"{path} is not a valid CIFAR npz file: x has dtype {x.dtype} and shape {x.shape}, "
                f"expected uint8 (N, 32, 32, 3)"
            )
        _check_cifar_arrays(path, x, y, len(CIFAR10_CLASSES))
        images.append(x)
        labels.append(y)
    # HWC -> NCHW once here, so every consumer sees the layout torch and kornia expect.
    chw = np.ascontiguousarray(np.concatenate(images).transpose(0, 3, 1, 2))
    return (
        torch.from_numpy(chw),
        torch.from_numpy(np.concatenate(labels).astype(np.int64)),
        list(CIFAR10_CLASSES),
    )


def _unpickle(path: Path) -> dict:
    # Unpickling runs code from the file, so like torchvision we trust the dataset files we are pointed at.
    try:
        with open(path, "rb") as file:
            # latin1 is how torchvision reads the Python-2 pickles of the original archive.
            content = pickle.load(file, encoding="latin1")
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        IndexError,
        TypeError,
    ) as error:
        raise ValueError(f"{path} is not a valid CIFAR pickle file: {error}") from error
    if not isinstance(content, dict):
        raise ValueError(
            f"{path} is not a valid CIFAR pickle file: it holds a {type(content).__name__}, not a dict"
        )
    return content


def _read_cifar_pickle(
    name: str, directory: Path, files: list[str]
) -> tuple[Tensor, Tensor, list[str]]:
    *batch_files, meta_file = files
    label_key, names_key, num_classes = (
        ("labels", "label_names", 10)
        if name == "cifar10"
        else ("fine_labels", "fine_label_names", 100)
    )
    meta_path = directory / meta_file
    classes = _unpickle(meta_path).get(names_key)
    if not isinstance(classes, list) or len(classes) != num_classes:
        raise ValueError(
            f"{meta_path} is not a valid {name} meta file: expected {num_classes} names under {names_key!r}"
        )
    images, labels = [], []
    for batch_name in batch_files:
        path = directory / batch_name
        entry = _unpickle(path)
        if "data" not in entry or label_key not in entry:
            raise ValueError(
                f"{path} is not a valid {name} batch: keys {sorted(entry)}, expected 'data' and {label_key!r}"
            )
        data = np.asarray(entry["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
            raise ValueError(
                f"{path} is not a valid {name} batch: data has dtype {data.dtype} and shape {data.shape}, "
                f"expected uint8 (N, {_CIFAR_PIXELS})"
            )
        batch_labels = np.asarray(entry[label_key])
        _check_cifar_arrays(path, data, batch_labels, num_classes)
        images.append(data)
        labels.append(batch_labels)
    # The pickle rows are already channel-major (1024 R, 1024 G, 1024 B), i.e. CHW.
    chw = np.concatenate(images).reshape(-1, 3, 32, 32)
    return (
        torch.from_numpy(chw),
        torch.from_numpy(np.concatenate(labels).astype(np.int64)),
        [str(c) for c in classes],
    )


# ----------------------------------------------------------------------------------------------
# Image folders
# ----------------------------------------------------------------------------------------------
def image_folder_root(data_dir: Path, split: str | None) -> Path:
    """The class-folder root of `split` under `data_dir` (see `load_dataset` for the rule)."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"image folder data_dir={str(data_dir)!r} is not a directory")
    if split is None:
        return data_dir
    if split not in ("train", "test", "val"):
        raise ValueError(f"split must be 'train', 'test' or 'val' for image_folder, got {split!r}")
    split_dirs = [
        data_dir / name for name in ("train", "test", "val") if (data_dir / name).is_dir()
    ]
    if not split_dirs:
        if split == "train":
            return data_dir
        raise FileNotFoundError(
            f"image_folder split {split!r}: {data_dir} has no 'test' or 'val' sub-folder, so it is read as "
            f"the class folders of the train split only; add {data_dir / 'test'} (or 'val') for a held-out split"
        )
    candidates = ["train"] if split == "train" else [split, "val" if split == "test" else "test"]
    for name in candidates:
        if (data_dir / name).is_dir():
            return data_dir / name
    checked = ", ".join(str(data_dir / name) for name in candidates)
    raise FileNotFoundError(f"image_folder split {split!r} not found: checked {checked}")


def find_image_files(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folder names) and (file, label) pairs, files sorted per class, searched recursively."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FileNotFoundError(
            f"image folder {root} has no class sub-folders (expected {root}/<class>/<image>)"
        )
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        files = sorted(
            p
            for p in (root / name).rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise FileNotFoundError(
                f"class folder {root / name} holds no image files with extensions {IMAGE_EXTENSIONS}"
            )
        samples.extend((path, label) for path in files)
    return classes, samples


def resize_square(images: Tensor, size: int) -> Tensor:
    """uint8 (..., 3, H, W) -> uint8 (..., 3, size, size): shorter side to `size` (bilinear, antialias),
    then a center crop of the longer side."""
    height, width = images.shape[-2:]
    if (height, width) == (size, size):
        return images
    from torchvision.transforms.v2 import functional as F

    resized = F.resize(images, [size], antialias=True)
    return F.center_crop(resized, [size, size])


def decode_image(path: Path, size: int) -> Tensor:
    """Decode one image file as RGB and resize it to uint8 (3, size, size)."""
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_image as _decode

    try:
        image = _decode(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as error:
        raise ValueError(f"cannot decode image {path}: {error}") from error
    return resize_square(image, size)


# ----------------------------------------------------------------------------------------------
# Tabular CSV
# ----------------------------------------------------------------------------------------------
def _read_lines(path: Path) -> list[str]:
    with open(path, "rb") as file:
        is_gzip = file.read(2) == b"\x1f\x8b"
    opener = gzip.open if is_gzip else open
    with opener(path, "rt", encoding="utf-8", newline="") as file:
        lines = file.read().splitlines()
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
    """Features float32 (N, F), labels int64 (N,) in 0..C-1, class names (label values as strings)."""
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
    if not path.is_file():
        raise FileNotFoundError(
            f"tabular data_dir must be a CSV or CSV.gz file; {path} is not a file"
        )

    lines = _read_lines(path)
    if len(lines) < 2:
        raise ValueError(
            f"{path} needs a header line and at least one data row, found {len(lines)} lines"
        )
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
        raise ValueError(f"{path}: feature columns must be numeric: {error}") from error
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

    num_rows = len(rows)
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

    train_features = features[train_mask]
    mean, std = train_features.mean(axis=0), train_features.std(axis=0)
    if standardize == "none":
        scaled_columns = np.zeros(features.shape[1], dtype=bool)
    else:
        scaled_columns = std > 0
        if standardize == "nonbinary":
            binary = np.all((train_features == 0) | (train_features == 1), axis=0)
            scaled_columns &= ~binary

    selected = train_mask if split == "train" else ~train_mask
    out = features[selected]
    out[:, scaled_columns] = (out[:, scaled_columns] - mean[scaled_columns]) / std[scaled_columns]

    labels, classes = _encode_labels(path, raw_labels[train_mask], raw_labels[selected])
    return torch.from_numpy(out.astype(np.float32)), torch.from_numpy(labels), classes


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
