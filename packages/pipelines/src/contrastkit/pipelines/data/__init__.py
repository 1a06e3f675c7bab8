"""Datasets for the pipelines: CIFAR-10/100, image folders and CSV tables loaded as tensors, class-balanced
subsets, and epoch batch iterators whose order depends only on (seed, epoch) so runs resume exactly.

datasets.py holds the datasets and load_dataset, batches.py the batch iterators; cifar.py, image_folder.py
and tabular.py read the files."""

from __future__ import annotations

from contrastkit.pipelines.data.batches import DeviceBatches, LoaderBatches, epoch_permutation
from contrastkit.pipelines.data.datasets import (
    AUGMENT_DATASET,
    DATASET_KINDS,
    DATASET_NAMES,
    ImageFolderDataset,
    InMemoryDataset,
    balanced_subset,
    load_dataset,
)
from contrastkit.pipelines.data.image_folder import UnreadableImagesError

__all__ = [
    "AUGMENT_DATASET",
    "DATASET_KINDS",
    "DATASET_NAMES",
    "DeviceBatches",
    "ImageFolderDataset",
    "InMemoryDataset",
    "LoaderBatches",
    "UnreadableImagesError",
    "balanced_subset",
    "epoch_permutation",
    "load_dataset",
]
