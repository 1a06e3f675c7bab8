"""The datasets of the pipelines: a whole split held as two tensors (InMemoryDataset, load_dataset), an
image folder read file by file (ImageFolderDataset), and class-balanced subsets of either."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from contrastkit.pipelines.data.cifar import read_cifar
from contrastkit.pipelines.data.image_folder import (
    SKIP_FLAG,
    decode_image,
    find_image_files,
    image_folder_root,
    non_image_note,
    note,
    resize_square,
    skipped_note,
    unreadable_error,
    unreadable_images,
)
from contrastkit.pipelines.data.tabular import TABULAR_OPTIONS, read_tabular

DATASET_NAMES: tuple[str, ...] = ("cifar10", "cifar100", "image_folder", "tabular")
DATASET_KINDS: tuple[str, ...] = ("image", "tabular")
_PROGRESS_MIN_FILES = 1000
# Normalisation constants `contrastkit.augment.make_views` uses for each data.dataset.
AUGMENT_DATASET = {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "image_folder": "imagenet",
    "tabular": "tabular",
}


@dataclass
class InMemoryDataset:
    """A whole dataset as two tensors.

    inputs: images uint8 (N, C, H, W), pixel values 0..255; tabular float32 (N, F).
    labels: int64 (N,), class indices 0..num_classes-1.
    classes: class names; `classes[label]` names a label.
    kind: "image" or "tabular".
    """

    inputs: Tensor
    labels: Tensor
    classes: list[str]
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in DATASET_KINDS:
            raise ValueError(f"kind must be one of {DATASET_KINDS}, got {self.kind!r}")
        if not isinstance(self.inputs, Tensor) or not isinstance(self.labels, Tensor):
            raise ValueError(
                f"inputs and labels must be tensors, got {type(self.inputs).__name__} and {type(self.labels).__name__}"
            )
        expected = (
            (torch.uint8, 4, "(N, C, H, W)")
            if self.kind == "image"
            else (torch.float32, 2, "(N, F)")
        )
        if self.inputs.dtype != expected[0] or self.inputs.dim() != expected[1]:
            raise ValueError(
                f"{self.kind} inputs must be {expected[0]} {expected[2]}, got {self.inputs.dtype} {tuple(self.inputs.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != self.inputs.shape[:1]:
            raise ValueError(
                f"labels must be int64 of shape ({self.inputs.shape[0]},), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if not self.classes:
            raise ValueError("classes must name at least one class, got an empty list")
        if len(self.labels) and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)
        ):
            raise ValueError(
                f"labels must lie in 0..{len(self.classes) - 1} (len(classes) = {len(self.classes)}), "
                f"got values in [{int(self.labels.min())}, {int(self.labels.max())}]"
            )

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def device(self) -> torch.device:
        return self.inputs.device

    def subset(self, indices: Tensor) -> InMemoryDataset:
        """The samples at `indices` (int64 (M,), any order, repeats allowed), same classes and kind."""
        if (
            not isinstance(indices, Tensor)
            or indices.dim() != 1
            or indices.dtype not in (torch.int32, torch.int64)
        ):
            raise ValueError(f"indices must be a 1-D int64 tensor, got {_describe(indices)}")
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= len(self)):
            raise ValueError(
                f"indices must lie in 0..{len(self) - 1}, got values in [{int(indices.min())}, {int(indices.max())}]"
            )
        indices = indices.to(self.inputs.device, torch.int64)
        return InMemoryDataset(
            self.inputs[indices], self.labels[indices], list(self.classes), self.kind
        )

    def to(self, device: torch.device | str) -> InMemoryDataset:
        """The same dataset with both tensors on `device`."""
        return InMemoryDataset(
            self.inputs.to(device), self.labels.to(device), list(self.classes), self.kind
        )


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"


def load_dataset(
    name: str,
    data_dir: str | Path,
    split: str = "train",
    *,
    image_size: int | None = None,
    download: bool = False,
    skip_bad_images: bool = False,
    verbose: bool = True,
    **tabular_options: Any,
) -> InMemoryDataset:
    """Load a whole split into memory (on the CPU).

    name: one of DATASET_NAMES.
    cifar10 / cifar100 (split "train" or "test"): uint8 (N, 3, 32, 32) images; cifar100 uses the 100 fine labels.
        `data_dir` may hold torchvision's pickle format (`cifar-10-batches-py/` / `cifar-100-python/`, or be that
        folder itself) or, for cifar10, the npz folder format (`cifar10_train_{1..5}.npz`, `cifar10_test.npz`, in
        `data_dir` or `data_dir/cifar10`). When both exist the pickles win (original pixels). Nothing found ->
        FileNotFoundError listing every format and path checked; `download=True` then lets torchvision download
        the pickle format into `data_dir`. `image_size` other than None/32 resizes (see image_folder).
    image_folder: `data_dir/<class>/<image>` (any size; .jpg .jpeg .png .gif .webp, searched recursively; classes
        are the sorted sub-folder names). If `data_dir` has `train`, `test` or `val` sub-folders they are the splits:
        split "train" reads `data_dir/train`, "test" reads `data_dir/test` (else `data_dir/val`), "val" reads
        `data_dir/val` (else `data_dir/test`); otherwise `data_dir` itself is the train split and there is no
        held-out split. Images are decoded as RGB with torchvision.io, the shorter side resized to `image_size`
        (bilinear, antialias) and center-cropped to uint8 (3, image_size, image_size). Everything is decoded into
        memory (a tqdm bar shows progress for >= 1000 files); use ImageFolderDataset + LoaderBatches for large folders.
        Files that cannot be read (checked before decoding, see ImageFolderDataset, then decoded) are all
        listed in one UnreadableImagesError (a ValueError); `skip_bad_images=True` leaves them out with a
        one-line warning instead. Files with other extensions are counted in one warning line. `verbose=False`
        silences the warnings and progress bars (e.g. on all but the main process).
    tabular: `data_dir` is a CSV or gzip CSV file with a header line and numeric feature columns; float32 (N, F)
        features, labels remapped to 0..C-1 in sorted order of the train split's label values (numeric order when
        all are integers), `classes` = those values as strings. `image_size` is ignored. Options:
          label_column (default: the last column), drop_columns (e.g. ["Id"]), delimiter (",");
          held-out rows: val_start (rows [val_start:] by position, 0-based data rows) or val_fraction (a random
          round(N * val_fraction) rows drawn with split_seed, default 0); split "train" is the other rows and
          "test"/"val" the held-out ones (without either option, "train" is every row and there is no held-out split);
          standardize: "nonbinary" (default; z-score the columns that are not all 0/1 and have std > 0), "all"
          (every column with std > 0) or "none" — mean/std (ddof=0) always from the train rows only.
        Covertype (shared/data/covtype): `load_dataset("tabular", ".../covtype_train15k.csv.gz", split,
        label_column="Cover_Type", drop_columns=["Id"], val_start=11340)` gives UCI's 11,340 train / 3,780 held-out
        rows of 54 features with the 10 continuous columns standardized and labels 0..6.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"name must be one of {DATASET_NAMES}, got {name!r}")
    if name != "tabular" and tabular_options:
        raise ValueError(
            f"options {sorted(tabular_options)} are only for the 'tabular' dataset, got name={name!r}"
        )
    unknown = sorted(set(tabular_options) - set(TABULAR_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown tabular option(s) {unknown}; valid options: {list(TABULAR_OPTIONS)}"
        )
    if skip_bad_images and name != "image_folder":
        raise ValueError(
            f"skip_bad_images=True is only for image_folder (the others are single files), got name={name!r}"
        )
    if download and name not in ("cifar10", "cifar100"):
        raise ValueError(
            f"download=True is only supported for cifar10 and cifar100, got name={name!r}"
        )
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ValueError(f"image_size must be a positive int or None, got {image_size!r}")
    data_dir = Path(data_dir).expanduser()

    if name in ("cifar10", "cifar100"):
        images, labels, classes = read_cifar(name, data_dir, split, download)
        if image_size is not None and image_size != images.shape[-1]:
            images = torch.cat([resize_square(chunk, image_size) for chunk in images.split(4096)])
        return InMemoryDataset(images, labels, classes, "image")
    if name == "image_folder":
        if image_size is None:
            raise ValueError(
                "image_size is required for image_folder (images of any size are resized to it)"
            )
        folder = ImageFolderDataset(
            data_dir, image_size, split=split, skip_bad_images=skip_bad_images, verbose=verbose
        )
        return _decode_image_folder(folder, verbose)
    features, labels, classes = read_tabular(data_dir, split, **tabular_options)
    return InMemoryDataset(features, labels, classes, "tabular")


def _decode_image_folder(folder: ImageFolderDataset, verbose: bool) -> InMemoryDataset:
    """Every image of `folder` decoded into one uint8 (N, 3, S, S) tensor (S = folder.image_size).

    Files that fail to decode (damaged after a good header) are all listed in one ValueError, or
    left out with a warning line when the folder skips bad images."""
    from tqdm.auto import tqdm

    size = folder.image_size
    images = torch.empty((len(folder), 3, size, size), dtype=torch.uint8)
    bad: list[tuple[Path, str]] = []
    keep = torch.ones(len(folder), dtype=torch.bool)
    show = verbose and len(folder) >= _PROGRESS_MIN_FILES
    for i in tqdm(
        range(len(folder)), desc=f"decoding {folder.root}", disable=None if show else True
    ):
        path = folder.samples[i][0]
        try:
            images[i] = decode_image(path, size)
        except ValueError as error:
            bad.append((path, str(error).removeprefix(f"cannot decode image {path}: ")))
            keep[i] = False
    if bad and not folder.skip_bad_images:
        raise unreadable_error(folder.root, bad, len(folder))
    if bad and verbose:
        note(skipped_note(folder.root, bad, len(folder)))
    if not bool(keep.any()):
        raise ValueError(f"no image under {folder.root} could be decoded")
    return InMemoryDataset(images[keep], folder.labels[keep], list(folder.classes), "image")


class ImageFolderDataset(Dataset):
    """Images in `root/<class>/<image>` (classes = sorted sub-folder names, files searched recursively), each
    decoded as RGB and resized (shorter side to `image_size`, bilinear with antialias, then center crop).

    `dataset[i]` is (uint8 (3, image_size, image_size), int label). With `split` given, `root` is resolved
    like `load_dataset("image_folder", root, split)` (root/train, root/test or root/val when present).

    At construction every file is checked without decoding it (`image_folder.unreadable_images`:
    its header, a PNG's checksums, the end of a JPEG / GIF / WebP; a progress bar for >= 1000
    files on a terminal). Unreadable files are all listed in one UnreadableImagesError (a
    ValueError), or, with `skip_bad_images=True`, left out with a one-line warning (their classes
    stay, so labels match the other splits). A file whose pixels fail to decode later raises a ValueError naming
    it, or with `skip_bad_images` is replaced by the next readable sample (a warning per file).
    Files with other extensions than IMAGE_EXTENSIONS are counted in one warning line.
    verbose=False silences warnings and bars (e.g. on all but the main process).

    Attributes: root (the class-folder root), classes, samples [(path, label)], labels int64 (N,),
    skipped [(path, reason)] (unreadable files left out), non_image_files [path].
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int,
        *,
        split: str | None = None,
        skip_bad_images: bool = False,
        verbose: bool = True,
    ) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        self.root = image_folder_root(Path(root).expanduser(), split)
        self.image_size = image_size
        self.skip_bad_images = bool(skip_bad_images)
        self.verbose = verbose
        self.classes, samples, self.non_image_files = find_image_files(self.root)
        if self.non_image_files and verbose:
            note(non_image_note(self.root, self.non_image_files))
        show = verbose and len(samples) >= _PROGRESS_MIN_FILES
        self.skipped = unreadable_images(
            [path for path, _ in samples], progress=show, desc=f"checking {self.root}"
        )
        if self.skipped and not self.skip_bad_images:
            raise unreadable_error(self.root, self.skipped, len(samples))
        if self.skipped:
            bad = {path for path, _ in self.skipped}
            if verbose:
                note(skipped_note(self.root, self.skipped, len(samples)))
            samples = [sample for sample in samples if sample[0] not in bad]
            if not samples:
                raise ValueError(f"no readable image under {self.root}: every file was skipped")
        self.samples = samples
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)
        self._warned: set[Path] = set()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        for offset in range(len(self.samples)):
            path, label = self.samples[(index + offset) % len(self.samples)]
            try:
                return decode_image(path, self.image_size), label
            except ValueError as error:
                if not self.skip_bad_images:
                    raise ValueError(
                        f"{error}; its header was readable, its pixels are not: fix or remove "
                        f"the file, or set {SKIP_FLAG} to replace it by the next image"
                    ) from None
                if self.verbose and path not in self._warned:
                    self._warned.add(path)
                    note(f"warning: {error}; replaced by the next image ({SKIP_FLAG})")
        raise ValueError(f"no image under {self.root} could be decoded")


def balanced_subset(labels: Tensor, size: int, seed: int, *, name: str = "size") -> Tensor:
    """Sorted int64 indices (size,), on the CPU, of a class-balanced random subset of `labels` (int (N,)).

    The C classes are the distinct label values present. Each gets size // C samples and the first
    size % C classes (in increasing label order) one more; within a class the samples are the first
    ones of a torch.randperm drawn from a CPU generator seeded with `seed`, classes in increasing order.
    The result depends only on (labels, size, seed). name: what errors call `size` (e.g.
    "data.train_subset"), so a message names the setting the user wrote.
    """
    if (
        not isinstance(labels, Tensor)
        or labels.dim() != 1
        or labels.dtype.is_floating_point
        or labels.dtype == torch.bool
    ):
        raise ValueError(f"labels must be a 1-D integer tensor, got {_describe(labels)}")
    if isinstance(size, bool) or not isinstance(size, int):
        raise ValueError(f"{name} must be an int, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    labels = labels.detach().cpu()
    values, counts = torch.unique(labels, return_counts=True)
    num_classes = len(values)
    if size > len(labels):
        raise ValueError(f"{name}={size} is larger than the dataset ({len(labels)} samples)")
    if size < num_classes:
        raise ValueError(
            f"{name}={size} is smaller than the number of classes ({num_classes}); a class-balanced "
            f"subset needs at least one sample of each: use {name} >= {num_classes}"
        )
    per_class = torch.full((num_classes,), size // num_classes, dtype=torch.int64)
    per_class[: size % num_classes] += 1
    short = (counts < per_class).nonzero().flatten()
    if len(short):
        c = int(short[0])
        raise ValueError(
            f"class {int(values[c])} has only {int(counts[c])} samples but a balanced subset of {name}={size} "
            f"over {num_classes} classes needs {int(per_class[c])} from it"
        )
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for value, take in zip(values.tolist(), per_class.tolist(), strict=True):
        members = (labels == value).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:take]])
    return torch.cat(chosen).sort().values
