"""Datasets for the pipelines: CIFAR-10/100, image folders and CSV tables loaded as tensors, class-balanced
subsets, and epoch batch iterators whose order depends only on (seed, epoch) so runs resume exactly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from contrastkit.pipelines.data import _readers

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
    unknown = sorted(set(tabular_options) - set(_readers.TABULAR_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown tabular option(s) {unknown}; valid options: {list(_readers.TABULAR_OPTIONS)}"
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
        images, labels, classes = _readers.read_cifar(name, data_dir, split, download)
        if image_size is not None and image_size != images.shape[-1]:
            images = torch.cat(
                [_readers.resize_square(chunk, image_size) for chunk in images.split(4096)]
            )
        return InMemoryDataset(images, labels, classes, "image")
    if name == "image_folder":
        if image_size is None:
            raise ValueError(
                "image_size is required for image_folder (images of any size are resized to it)"
            )
        folder = ImageFolderDataset(data_dir, image_size, split=split)
        images = torch.empty((len(folder), 3, image_size, image_size), dtype=torch.uint8)
        from tqdm.auto import tqdm

        for i in tqdm(
            range(len(folder)),
            desc=f"decoding {folder.root}",
            disable=len(folder) < _PROGRESS_MIN_FILES,
        ):
            images[i] = folder[i][0]
        return InMemoryDataset(images, folder.labels.clone(), list(folder.classes), "image")
    features, labels, classes = _readers.read_tabular(data_dir, split, **tabular_options)
    return InMemoryDataset(features, labels, classes, "tabular")


class ImageFolderDataset(Dataset):
    """Images in `root/<class>/<image>` (classes = sorted sub-folder names, files searched recursively), each
    decoded as RGB and resized (shorter side to `image_size`, bilinear with antialias, then center crop).

    `dataset[i]` is (uint8 (3, image_size, image_size), int label). With `split` given, `root` is resolved
    like `load_dataset("image_folder", root, split)` (root/train, root/test or root/val when present).
    Attributes: root (the class-folder root), classes, samples [(path, label)], labels int64 (N,).
    """

    def __init__(self, root: str | Path, image_size: int, *, split: str | None = None) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive int, got {image_size!r}")
        self.root = _readers.image_folder_root(Path(root).expanduser(), split)
        self.image_size = image_size
        self.classes, self.samples = _readers.find_image_files(self.root)
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        return _readers.decode_image(path, self.image_size), label


def balanced_subset(labels: Tensor, size: int, seed: int) -> Tensor:
    """Sorted int64 indices (size,), on the CPU, of a class-balanced random subset of `labels` (int (N,)).

    The C classes are the distinct label values present. Each gets size // C samples and the first
    size % C classes (in increasing label order) one more; within a class the samples are the first
    ones of a torch.randperm drawn from a CPU generator seeded with `seed`, classes in increasing order.
    The result depends only on (labels, size, seed).
    """
    if (
        not isinstance(labels, Tensor)
        or labels.dim() != 1
        or labels.dtype.is_floating_point
        or labels.dtype == torch.bool
    ):
        raise ValueError(f"labels must be a 1-D integer tensor, got {_describe(labels)}")
    if isinstance(size, bool) or not isinstance(size, int):
        raise ValueError(f"size must be an int, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    labels = labels.detach().cpu()
    values, counts = torch.unique(labels, return_counts=True)
    num_classes = len(values)
    if size > len(labels):
        raise ValueError(f"size={size} is larger than the dataset ({len(labels)} samples)")
    if size < num_classes:
        raise ValueError(
            f"size={size} is smaller than the number of classes ({num_classes}); each class needs >= 1"
        )
    per_class = torch.full((num_classes,), size // num_classes, dtype=torch.int64)
    per_class[: size % num_classes] += 1
    short = (counts < per_class).nonzero().flatten()
    if len(short):
        c = int(short[0])
        raise ValueError(
            f"class {int(values[c])} has only {int(counts[c])} samples but a balanced subset of size={size} "
            f"over {num_classes} classes needs {int(per_class[c])} from it"
        )
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for value, take in zip(values.tolist(), per_class.tolist(), strict=True):
        members = (labels == value).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:take]])
    return torch.cat(chosen).sort().values


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> Tensor:
    """int64 (num_samples,) permutation for one epoch, a function of (seed, epoch) only.

    Drawn with torch.randperm on a CPU torch.Generator seeded with
    numpy.random.SeedSequence([seed, epoch]).generate_state(1)[0] (a 32-bit hash of both: torch's CPU
    generator keeps only the low 32 bits of its seed, so arithmetic like seed * K + epoch would collide).
    Same on every rank and device; seed and epoch must be >= 0.
    """
    for name, value in (("num_samples", num_samples), ("seed", seed), ("epoch", epoch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    mixed = int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])
    return torch.randperm(int(num_samples), generator=torch.Generator().manual_seed(mixed))


def _check_sharding(num_samples: int, batch_size: int, rank: int, world_size: int) -> int:
    """Number of full global batches per epoch, after validating the sharding arguments."""
    for name, value, low in (
        ("batch_size", batch_size, 1),
        ("world_size", world_size, 1),
        ("rank", rank, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if rank >= world_size:
        raise ValueError(
            f"rank must be in 0..{world_size - 1} (world_size={world_size}), got {rank}"
        )
    global_batch = batch_size * world_size
    if num_samples < global_batch:
        raise ValueError(
            f"the dataset has {num_samples} samples, fewer than one global batch of {global_batch} "
            f"(batch_size {batch_size} x world_size {world_size})"
        )
    return num_samples // global_batch


def _rank_indices(
    num_samples: int,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    batches: int,
) -> Tensor:
    """int64 (batches, batch_size): row t = rank's slice [rank*B : (rank+1)*B] of global batch t of the epoch."""
    permutation = epoch_permutation(num_samples, seed, epoch)
    grid = permutation[: batches * batch_size * world_size].view(batches, world_size, batch_size)
    return grid[:, rank].contiguous()


def _check_position(epoch: int, start_batch: int, batches: int) -> None:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
    if (
        isinstance(start_batch, bool)
        or not isinstance(start_batch, int)
        or not 0 <= start_batch <= batches
    ):
        raise ValueError(
            f"start_batch must be an int in 0..{batches} (batches_per_epoch), got {start_batch!r}"
        )


class DeviceBatches:
    """Whole dataset on `device`; each epoch a permutation that depends only on (seed, epoch) — generated on
    the CPU with torch.Generator (see epoch_permutation) so it is the same on every device and every rank.

    Global batch t is perm[t*B*W : (t+1)*B*W] and rank r takes its slice [r*B : (r+1)*B] of it, so the
    concatenation over ranks in rank order equals the 1-process batch of size B*W; the last incomplete
    global batch is dropped. Batches are (inputs (B, ...), labels int64 (B,)) on `device`.
    `epoch(e, start_batch=k)` skips the first k batches of that same permutation (exact resume).
    """

    def __init__(
        self,
        dataset: InMemoryDataset,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        if not isinstance(dataset, InMemoryDataset):
            raise ValueError(f"dataset must be an InMemoryDataset, got {type(dataset).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.batches_per_epoch = _check_sharding(len(dataset), batch_size, rank, world_size)
        self.dataset = dataset.to(device)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.device = torch.device(device)

    def batch_indices(self, epoch: int) -> Tensor:
        """int64 (batches_per_epoch, batch_size) on the CPU: this rank's dataset indices for each batch."""
        _check_position(epoch, 0, self.batches_per_epoch)
        return _rank_indices(
            len(self.dataset),
            self.batch_size,
            self.seed,
            epoch,
            self.rank,
            self.world_size,
            self.batches_per_epoch,
        )

    def __len__(self) -> int:
        return self.batches_per_epoch

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (inputs, labels) for batches start_batch..batches_per_epoch-1 of `epoch`."""
        _check_position(epoch, start_batch, self.batches_per_epoch)
        # One host-to-device copy of the whole epoch's indices, then pure on-device slicing per batch.
        return self._iterate(self.batch_indices(epoch)[start_batch:].to(self.device))

    def _iterate(self, indices: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        inputs, labels = self.dataset.inputs, self.dataset.labels
        for batch in indices:
            yield inputs[batch], labels[batch]


class _RankSampler(Sampler[int]):
    """This rank's indices for (epoch, start_batch), flattened batch after batch.

    Holds copies of the sharding arguments, not its LoaderBatches: a reference cycle through the
    DataLoader leaves the persistent workers to the garbage collector, whose shutdown of them
    waits out a 10 s timeout."""

    def __init__(
        self, num_samples: int, batch_size: int, seed: int, rank: int, world_size: int, batches: int
    ) -> None:
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.batches = rank, world_size, batches
        self.epoch = 0
        self.start_batch = 0

    def indices(self, epoch: int) -> Tensor:
        return _rank_indices(
            self.num_samples,
            self.batch_size,
            self.seed,
            epoch,
            self.rank,
            self.world_size,
            self.batches,
        )

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices(self.epoch)[self.start_batch :].flatten().tolist())

    def __len__(self) -> int:
        return (self.batches - self.start_batch) * self.batch_size


class LoaderBatches:
    """DeviceBatches' interface and index rule over a map-style dataset (typically ImageFolderDataset) read by
    a DataLoader with `num_workers` worker processes; batches are moved to `device` (pinned memory and
    non_blocking copies when the device is CUDA). `dataset[i]` must return (tensor, int label)."""

    def __init__(
        self,
        dataset: ImageFolderDataset | Dataset,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        num_workers: int = 4,
    ) -> None:
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise ValueError(
                f"dataset must be a map-style Dataset with __len__, got {type(dataset).__name__}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        self.batches_per_epoch = _check_sharding(len(dataset), batch_size, rank, world_size)
        self.dataset = dataset
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.device = torch.device(device)
        self._sampler = _RankSampler(
            len(dataset), batch_size, seed, rank, world_size, self.batches_per_epoch
        )
        self._loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self._sampler,
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=num_workers > 0,
        )

    def batch_indices(self, epoch: int) -> Tensor:
        """int64 (batches_per_epoch, batch_size) on the CPU: this rank's dataset indices for each batch."""
        _check_position(epoch, 0, self.batches_per_epoch)
        return self._sampler.indices(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (inputs, labels) for batches start_batch..batches_per_epoch-1 of `epoch`, on `device`.
        One epoch iterator at a time (they share the DataLoader)."""
        _check_position(epoch, start_batch, self.batches_per_epoch)
        return self._iterate(epoch, start_batch)

    def _iterate(self, epoch: int, start_batch: int) -> Iterator[tuple[Tensor, Tensor]]:
        # Set here, not in epoch(): the sampler is read when the DataLoader starts, at the first next().
        self._sampler.epoch, self._sampler.start_batch = epoch, start_batch
        for inputs, labels in self._loader:
            yield (
                inputs.to(self.device, non_blocking=True),
                labels.to(self.device, non_blocking=True),
            )
