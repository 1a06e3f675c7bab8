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
    balanced_subset,
    load_dataset,
)


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


def load_split(config: PretrainConfig, split: str) -> InMemoryDataset:
    """The `split` ("train" / "test") of data.dataset, read from data.data_dir."""
    data = config.data
    return load_dataset(
        data.dataset,
        data.data_dir,
        split,
        image_size=data.image_size if data.dataset != "tabular" else None,
        download=data.download,
        **data.tabular_options,
    )


def subset_split(
    dataset: InMemoryDataset, size: int | None, seed: int, what: str
) -> InMemoryDataset:
    """A class-balanced subset of `size` samples (the whole split when size is None or equal);
    what: the data.<field> that asked, for the error when size exceeds the split."""
    if size is None or size >= len(dataset):
        if size is not None and size > len(dataset):
            raise ValueError(
                f"data.{what}={size} is larger than the split ({len(dataset)} samples)"
            )
        return dataset
    return dataset.subset(balanced_subset(dataset.labels, size, seed))


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
    is_main = accelerator.is_main_process
    monitor = is_main and (config.train.knn_every > 0 or config.train.online_linear)
    need_test = need_test and is_main
    if config.data.loader == "dataloader" and train_data is None:
        data = _image_folder_data(config, accelerator, monitor)
    else:
        data = _in_memory_data(config, accelerator, train_data, monitor)
    if monitor or need_test:
        data = _with_test_split(config, data, test_data, accelerator.device, need_test)
    return data


def _image_folder_data(config: PretrainConfig, accelerator: Accelerator, monitor: bool) -> RunData:
    """An image folder decoded by DataLoader workers; the monitor's train subset is held in memory."""
    data, train = config.data, config.train
    folder = ImageFolderDataset(data.data_dir, data.image_size, split="train")
    labels = folder.labels
    indices = (
        balanced_subset(labels, data.train_subset, train.seed)
        if data.train_subset is not None and data.train_subset < len(folder)
        else None
    )
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
        size = data.knn_train_subset
        if size is not None and size < len(pool):
            pool = pool[balanced_subset(labels[pool], size, train.seed)]
        images = torch.stack([folder[int(i)][0] for i in pool])
        knn_train = InMemoryDataset(images, labels[pool].clone(), list(folder.classes), "image")
    return RunData(batches, "image", folder.num_classes, None, knn_train, None)


def _in_memory_data(
    config: PretrainConfig,
    accelerator: Accelerator,
    train_data: InMemoryDataset | None,
    monitor: bool,
) -> RunData:
    """A split held on the device (given, or read from data.dataset), batched there."""
    data, train = config.data, config.train
    full = train_data if train_data is not None else load_split(config, "train")
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
    device: torch.device,
    need_test: bool,
) -> RunData:
    """`data` with the test split (data.knn_test_subset applied) and the monitor's train split on
    the device; without a test split monitoring is off (a warning), or an error if need_test."""
    if test_data is None:
        try:
            test_data = load_split(config, "test")
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
