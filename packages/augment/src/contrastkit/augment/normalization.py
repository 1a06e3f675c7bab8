"""Per-dataset normalization constants (channel mean and std of pixels / 255).

``tabular`` maps to None: tabular features are expected standardized upstream and are left as they are.
"""

from __future__ import annotations

from types import MappingProxyType

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]

DATASET_NORMALIZATION: MappingProxyType[str, Stats | None] = MappingProxyType(
    {
        # Measured on the 50k training images (shared/data/cifar10/README.md); the often-copied
        # std (0.2023, 0.1994, 0.2010) is a per-image std and is not used here.
        "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
        "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        "tabular": None,
    }
)

IMAGE_DATASETS: tuple[str, ...] = tuple(
    k for k, v in DATASET_NORMALIZATION.items() if v is not None
)
DATASETS: tuple[str, ...] = tuple(DATASET_NORMALIZATION)


def dataset_normalization(dataset: str) -> Stats | None:
    """(mean, std) per RGB channel on the [0, 1] scale for ``dataset``, or None for ``tabular``."""
    if dataset not in DATASET_NORMALIZATION:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {list(DATASETS)}")
    return DATASET_NORMALIZATION[dataset]
