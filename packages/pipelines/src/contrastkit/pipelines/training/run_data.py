"""The data of one training run: the per-process training batches and, on the main process, the
splits the kNN / online monitor (or a task's validation) reads."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator

from contrastkit.pipelines.config import PretrainConfig
from contrastkit.pipelines.data import (
    DeviceBatches,
    ImageFolderDataset,
    InMemoryDataset,
    LoaderBatches,
    UnreadableImagesError,
    balanced_subset,
    load_dataset,
)
from contrastkit.pipelines.evaluation.knn import check_knn_k

# The methods whose loss reads a queue of method.queue_size keys, to which every step appends the
# keys of the whole gathered batch (NNCLR: its support set; SwAV: queue_size // processes rows
# per process, each taking that process's batch). test_run_data.py checks this list against the
# built methods.
QUEUE_METHODS: tuple[str, ...] = ("isd", "moco", "nnclr", "swav")


@dataclass
class RunData:
    """batches: this process's share of every epoch. kind: "image" | "tabular". in_features: the
    tabular column count (None for images). knn_train / knn_test: the monitor's splits on the
    device, main process only (None when nothing monitors or no test split exists)."""

    batches: DeviceBatches | LoaderBatches
    kind: str
    num_classes: int
    in_features: int | None
    knn_train: InMemoryDataset | None
    knn_test: InMemoryDataset | None


def load_split(config: PretrainConfig, split: str, *, verbose: bool = True) -> InMemoryDataset:
    """The `split` ("train" / "test") of data.dataset, read from data.data_dir. verbose: print
    the reader's warnings (skipped files) and progress bars; False on all but the main process."""
    data = config.data
    image_folder = data.dataset == "image_folder"
    return load_dataset(
        data.dataset,
        data.data_dir,
        split,
        image_size=data.image_size if data.dataset != "tabular" else None,
        download=data.download,
        skip_bad_images=data.skip_bad_images and image_folder,
        verbose=verbose,
        **data.tabular_options,
    )


def subset_split(
    dataset: InMemoryDataset, size: int | None, seed: int, what: str
) -> InMemoryDataset:
    """A class-balanced subset of `size` samples (the whole split when size is None or equal);
    what: the data.<field> that asked, named by every error about size."""
    indices = subset_indices(dataset.labels, size, seed, what)
    return dataset if indices is None else dataset.subset(indices)


def subset_indices(
    labels: torch.Tensor, size: int | None, seed: int, what: str
) -> torch.Tensor | None:
    """Sorted int64 indices of a class-balanced subset of `size` of `labels` (int64 (N,)), or None
    for all of them (size None or N); errors name data.<what>."""
    if size is not None and size > len(labels):
        raise ValueError(
            f"data.{what}={size} is larger than the split ({len(labels)} samples); "
            f"use data.{what} <= {len(labels)} or leave it out"
        )
    if size is None or size == len(labels):
        return None
    return balanced_subset(labels, size, seed, name=f"data.{what}")


def check_queue_fits(config: PretrainConfig, num_processes: int) -> None:
    """A queue method's method.queue_size must hold at least one gathered batch: each step
    appends batch_size x processes keys, and a smaller queue would keep only part of them."""
    joint = getattr(config, "joint", None)
    if config.method.name not in QUEUE_METHODS or (joint is not None and joint.ssl_weight == 0):
        return
    batch = config.train.batch_size
    gathered = batch * num_processes
    if config.method.queue_size < gathered:
        processes = f"{num_processes} process{'es' if num_processes != 1 else ''}"
        raise ValueError(
            f"method.queue_size={config.method.queue_size} is smaller than the global batch of "
            f"{gathered} (train.batch_size={batch} x {processes}) that {config.method.name} "
            f"enqueues every step: set method.queue_size >= {gathered} (a multiple of it, many "
            "times larger, is usual) or lower train.batch_size"
        )


def check_knn_bank(config: PretrainConfig, data: RunData) -> None:
    """train.knn_k must not exceed the kNN bank, the training samples the monitor compares each
    test sample with (after data.train_subset and data.knn_train_subset)."""
    if config.train.knn_every == 0 or data.knn_train is None or data.knn_test is None:
        return
    bank = len(data.knn_train)
    subsets = [
        f"data.{name}={getattr(config.data, name)}"
        for name in ("train_subset", "knn_train_subset")
        if getattr(config.data, name) is not None
    ]
    source = f"after {' and '.join(subsets)}" if subsets else "the whole training split"
    check_knn_k(
        config.train.knn_k,
        bank,
        k_name="train.knn_k",
        bank=f"training samples in the kNN bank ({source})",
        fix=f"set train.knn_k <= {bank}, use more samples (data.knn_train_subset), or turn the "
        "kNN monitor off with train.knn_every=0",
    )


def prepare_data(
    config: PretrainConfig,
    accelerator: Accelerator,
    train_data: InMemoryDataset | None,
    test_data: InMemoryDataset | None,
    *,
    need_test: bool = False,
) -> RunData:
    """The run's batches and monitor splits. train_data / test_data: in-memory splits to use
    instead of reading data.dataset. need_test: load the test split (main process) even without
    a kNN / online monitor; a missing test split is then an error instead of a warning."""
    check_queue_fits(config, accelerator.num_processes)
    is_main = accelerator.is_main_process
    monitor = is_main and (config.train.knn_every > 0 or config.train.online_linear)
    need_test = need_test and is_main
    if config.data.loader == "dataloader" and train_data is None:
        data = _image_folder_data(config, accelerator, monitor)
    else:
        data = _in_memory_data(config, accelerator, train_data, monitor)
    if monitor or need_test:
        data = _with_test_split(config, data, test_data, accelerator, need_test)
    check_knn_bank(config, data)
    return data


def _image_folder_data(config: PretrainConfig, accelerator: Accelerator, monitor: bool) -> RunData:
    """An image folder decoded by DataLoader workers; the monitor's train subset is held in memory."""
    data, train = config.data, config.train
    folder = ImageFolderDataset(
        data.data_dir,
        data.image_size,
        split="train",
        skip_bad_images=data.skip_bad_images,
        verbose=accelerator.is_main_process,
    )
    labels = folder.labels
    indices = subset_indices(labels, data.train_subset, train.seed, "train_subset")
    dataset: Any = (
        torch.utils.data.Subset(folder, indices.tolist()) if indices is not None else folder
    )
    batches = LoaderBatches(
        dataset,
        train.batch_size,
        seed=train.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        device=accelerator.device,
        num_workers=data.num_workers,
    )
    knn_train = None
    if monitor:
        pool = indices if indices is not None else torch.arange(len(folder))
        chosen = subset_indices(labels[pool], data.knn_train_subset, train.seed, "knn_train_subset")
        pool = pool if chosen is None else pool[chosen]
        # Labels as read: with data.skip_bad_images an undecodable file is replaced by another.
        samples = [folder[int(i)] for i in pool]
        images = torch.stack([image for image, _ in samples])
        knn_labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
        knn_train = InMemoryDataset(images, knn_labels, list(folder.classes), "image")
    return RunData(batches, "image", folder.num_classes, None, knn_train, None)


def _in_memory_data(
    config: PretrainConfig,
    accelerator: Accelerator,
    train_data: InMemoryDataset | None,
    monitor: bool,
) -> RunData:
    """A split held on the device (given, or read from data.dataset), batched there."""
    data, train = config.data, config.train
    verbose = accelerator.is_main_process
    full = train_data if train_data is not None else load_split(config, "train", verbose=verbose)
    subset = subset_split(full, data.train_subset, train.seed, "train_subset")
    batches = DeviceBatches(
        subset,
        train.batch_size,
        seed=train.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        device=accelerator.device,
    )
    in_features = subset.inputs.shape[1] if subset.kind == "tabular" else None
    knn_train = (
        subset_split(subset, data.knn_train_subset, train.seed, "knn_train_subset")
        if monitor
        else None
    )
    return RunData(batches, subset.kind, subset.num_classes, in_features, knn_train, None)


def _with_test_split(
    config: PretrainConfig,
    data: RunData,
    test_data: InMemoryDataset | None,
    accelerator: Accelerator,
    need_test: bool,
) -> RunData:
    """`data` with the test split (data.knn_test_subset applied) and the monitor's train split on
    the device; without a test split monitoring is off (a warning), or an error if need_test."""
    if test_data is None:
        try:
            test_data = load_split(config, "test", verbose=accelerator.is_main_process)
        except UnreadableImagesError:
            raise  # a test split with damaged files exists: say so, do not turn monitoring off
        except (FileNotFoundError, ValueError) as error:
            if need_test:
                raise type(error)(
                    f"this run validates on the test split, which could not be loaded: {error}"
                ) from None
            print(
                f"warning: no test split for the kNN / online-linear monitor ({error}); monitoring is off",
                file=sys.stderr,
            )
    if test_data is None:
        return dataclasses.replace(data, knn_train=None, knn_test=None)
    train = config.train
    knn_test = subset_split(test_data, config.data.knn_test_subset, train.seed, "knn_test_subset")
    device = accelerator.device
    knn_train = data.knn_train.to(device) if data.knn_train is not None else None
    return dataclasses.replace(data, knn_train=knn_train, knn_test=knn_test.to(device))


def resolve_backbone_kwargs(config: PretrainConfig, in_features: int | None) -> None:
    """Tabular runs: fill model.backbone_kwargs.in_features from the data (checked if given)."""
    if in_features is None:
        return
    kwargs = config.model.backbone_kwargs
    given = kwargs.get("in_features")
    if given is None:
        kwargs["in_features"] = in_features
    elif given != in_features:
        raise ValueError(
            f"model.backbone_kwargs.in_features={given} but the data has {in_features} feature columns"
        )
