"""CIFAR-10/100 for `contrastkit.pipelines.data`: the npz folder format and torchvision's pickle
format read into uint8 (N, 3, 32, 32) images, or downloaded by torchvision when asked."""

from __future__ import annotations

import pickle
import zipfile
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

_CIFAR_PIXELS = 3 * 32 * 32


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
