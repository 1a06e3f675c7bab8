"""The one validator of what evaluation reads: (N, D) features and (N,) integer class labels.

kNN, the linear probe, t-SNE and the plots all check their inputs here, so a bad tensor gets the
same one-line `ValueError` wherever it enters.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_features(name: str, features: Tensor) -> None:
    """`features` must be a real floating-point (N, D) tensor; `name` is the argument's name."""
    if not isinstance(features, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if features.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D), got shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"{name} must be a real floating-point tensor, got dtype {features.dtype}")


def check_same_space(train_name: str, train: Tensor, query_name: str, query: Tensor) -> None:
    """Two (N, D) feature tensors must share D and the device."""
    if train.shape[1] != query.shape[1]:
        raise ValueError(
            f"{query_name} has feature dimension {query.shape[1]} but {train_name} has "
            f"{train.shape[1]}; both must be (N, D) with the same D"
        )
    if train.device != query.device:
        raise ValueError(
            f"{query_name} is on {query.device} but {train_name} is on {train.device}; "
            "put both on the same device"
        )


def check_labels(name: str, labels: Tensor, length: int, num_classes: int) -> None:
    """`labels` must be an integer (length,) tensor of class indices in [0, num_classes)."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.ndim != 1 or labels.shape[0] != length:
        raise ValueError(
            f"{name} must have shape ({length},) to match its features, got {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of class indices, got {labels.dtype}")
    if length and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{name} must lie in [0, {num_classes}) for num_classes={num_classes}, "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )
