"""The probe's feature cache: a split's frozen backbone features stored in the checkpoint folder
(or another cache folder), keyed by everything that shapes them (the weights' sha256, the data,
the view), so a probe rerun reads them back instead of running the backbone again.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from contrastkit.pipelines.atomic import save_torch_atomic
from contrastkit.pipelines.checkpoint_integrity import file_sha256
from contrastkit.pipelines.evaluation.features import extract_features, view_size
from contrastkit.pipelines.run_files import BACKBONE_FILE, feature_cache_file

if TYPE_CHECKING:
    from contrastkit.pipelines.data import InMemoryDataset

# Bump when the cache file layout changes, so old caches are recomputed rather than misread.
CACHE_FORMAT = 1
# Samples per backbone forward when extracting features for the cache (and for evaluation).
FEATURE_BATCH = 512


def feature_cache_path(
    cache_dir: Path,
    dataset: str,
    split: str,
    subset: int | None,
    seed: int,
    *,
    backbone_sha256: str | None = None,
) -> Path:
    """`<cache_dir>/features-<dataset>-<split>[-n<subset>-s<seed>].pt` (run_files.feature_cache_file).

    backbone_sha256: given for a cache folder other than the checkpoint's own, which may hold the
    caches of several checkpoints: the name starts with its first 16 hex digits, so each
    checkpoint keeps its own files instead of replacing another's.
    """
    name = feature_cache_file(dataset, split, subset, seed)
    prefix = f"{backbone_sha256[:16]}-" if backbone_sha256 else ""
    return Path(cache_dir) / f"{prefix}{name}"


def cache_key(
    *,
    backbone_sha256: str,
    dataset: str,
    split: str,
    data_dir: str | Path,
    image_size: int,
    view_dataset: str,
    num_samples: int,
    mixed_precision: str,
) -> dict[str, Any]:
    """What a cache file must match to be reused: the weights, the data and how it was viewed."""
    return {
        "format": CACHE_FORMAT,
        "backbone_sha256": backbone_sha256,
        "dataset": dataset,
        "split": split,
        "data_dir": str(Path(data_dir).expanduser().resolve()),
        "image_size": image_size,
        "view_dataset": view_dataset,
        "num_samples": num_samples,
        "mixed_precision": mixed_precision,
    }


def cached_features(
    backbone: nn.Module,
    inputs: Tensor,
    transform: Callable[[Tensor], Tensor] | None,
    cache_path: Path,
    key: dict[str, Any],
    *,
    progress: bool = False,
    write: bool = True,
) -> tuple[Tensor, bool]:
    """(N, D) float32 CPU features of `inputs`: read from `cache_path` when its key matches, else extracted.

    The key (`cache_key`: backbone.pt's sha256, dataset, split, data folder, image size, sample
    count) is stored with the features; any difference, e.g. a checkpoint rewritten in place,
    means a fresh extraction that replaces the file (atomically). A cache that cannot be written
    (read-only folder) is skipped.

    Args:
        backbone: the frozen backbone, on the device to run it on.
        inputs: (N, C, H, W) uint8 images or (N, F) tabular rows.
        transform: the (identity) view applied to each batch before the backbone.

    Returns:
        (features, True when they came from the cache).
    """
    if cache_path.is_file():
        try:
            stored = torch.load(cache_path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated or foreign file is simply recomputed
            stored = None
        if isinstance(stored, dict) and stored.get("key") == key:
            return stored["features"], True
    features = extract_features(
        backbone, inputs, transform=transform, batch_size=FEATURE_BATCH, progress=progress
    ).cpu()
    if write:
        try:
            save_torch_atomic({"key": key, "features": features}, cache_path)
        except OSError as error:
            print(f"contrastkit-probe: not caching features ({error})", file=sys.stderr)
    return features, False


def checkpoint_features(
    backbone: nn.Module,
    checkpoint_dir: Path,
    splits: Mapping[str, tuple[InMemoryDataset, int | None]],
    transform: Callable[[Tensor], Tensor],
    *,
    dataset: str,
    data_dir: str | Path,
    view_dataset: str,
    seed: int,
    mixed_precision: str,
    progress: bool = False,
    cache_dir: Path | None = None,
    weights_file: Path | None = None,
    weights_sha256: str | None = None,
) -> dict[str, Tensor]:
    """split -> (N, D) float32 CPU features of the checkpoint's backbone, through its cache.

    Each split's cache is `feature_cache_path(cache_dir, dataset, split, subset, seed)` (names
    prefixed with the weights' sha256 outside the checkpoint folder), keyed (`cache_key`) with
    the sha256 of the folder's backbone.pt (or of `weights_file`, an export's model.safetensors).

    Args:
        backbone: the checkpoint's backbone, on the device to run it on.
        splits: split name -> (its data, the --train/--test-subset size it was drawn with or None).
        cache_dir: the folder the caches go in (default: the checkpoint folder).
        weights_file: the file of the backbone's weights (default: checkpoint_dir/backbone.pt).
        weights_sha256: the fingerprint of weights that are in no file (a probe's --random-init
            backbone): used instead of a file's, and in the cache names even in the checkpoint
            folder, so they never replace the checkpoint's own caches.
        transform: the identity view of a batch (`features.identity_transform`).
        dataset, data_dir, view_dataset, mixed_precision: what else shapes the features (the key).
    """
    fingerprint = weights_sha256 or file_sha256(
        weights_file or Path(checkpoint_dir) / BACKBONE_FILE
    )
    features: dict[str, Tensor] = {}
    for split, (data, subset) in splits.items():
        key = cache_key(
            backbone_sha256=fingerprint, dataset=dataset, split=split, data_dir=data_dir,
            image_size=view_size(data), view_dataset=view_dataset, num_samples=len(data),
            mixed_precision=mixed_precision,
        )  # fmt: skip
        own = weights_sha256 is None and (
            cache_dir is None or Path(cache_dir).resolve() == Path(checkpoint_dir).resolve()
        )
        path = feature_cache_path(
            checkpoint_dir if cache_dir is None else cache_dir, dataset, split, subset, seed,
            backbone_sha256=None if own else fingerprint,
        )  # fmt: skip
        features[split], _ = cached_features(
            backbone, data.inputs, transform, path, key, progress=progress
        )
    return features
