"""Epoch batch iterators: an index order that depends only on (seed, epoch), sharded over ranks, read
from a dataset held on the device (DeviceBatches) or through a DataLoader (LoaderBatches)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from contrastkit.pipelines.data.datasets import ImageFolderDataset, InMemoryDataset


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
        try:
            for inputs, labels in self._loader:
                yield (
                    inputs.to(self.device, non_blocking=True),
                    labels.to(self.device, non_blocking=True),
                )
        except ValueError as error:
            message = _worker_error_message(str(error))
            if message is None:
                raise
            raise ValueError(message) from None


def _worker_error_message(text: str) -> str | None:
    """The dataset's own message of a ValueError a DataLoader worker raised (the DataLoader wraps
    it in the worker's traceback), so the command prints it as one line; None for other errors."""
    marker = "\nValueError: "
    if not text.startswith("Caught ValueError in DataLoader worker") or marker not in text:
        return None
    return text.rsplit(marker, 1)[1].strip()
