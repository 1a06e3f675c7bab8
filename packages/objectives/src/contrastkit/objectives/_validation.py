"""Input checks shared by every objective: each bad input becomes a ValueError that names the argument.

Also holds the numerics helpers every loss uses: the compute dtype, autocast switched off, eps-safe L2 normalisation.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator

import torch
from torch import Tensor

# Norm floor for L2 normalisation. Applied in float32 (or float64), where it cannot underflow,
# so an all-zero embedding becomes the zero vector instead of NaN.
NORM_EPS = 1e-12

# How far a soft-label row may sum away from 1 (float32 sums of a few thousand terms stay well inside).
ROW_SUM_TOLERANCE = 1e-3


def check_embeddings(name: str, x: object, shape: str = "(N, D)") -> Tensor:
    """Raise unless `x` is a non-empty floating 2-d tensor (described as `shape`); return it."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape {shape}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(x.shape)}")
    return x


def check_same_device(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise unless the two tensors live on the same device."""
    if a.device != b.device:
        raise ValueError(
            f"{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}"
        )


def check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise unless the two (N, D) tensors agree in N and D (and live on one device)."""
    check_same_device(name_a, a, name_b, b)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape (N, D), "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_queue(queue: object, dim: int, name: str = "queue") -> Tensor:
    """Raise unless `queue` is a non-empty floating (K, D) tensor with D == `dim`; return it.

    `name` is the argument's name in the messages (a negative queue, NNCLR's support set, ...).
    """
    queue = check_embeddings(name, queue, "(K, D)")
    if queue.shape[1] != dim:
        raise ValueError(
            f"{name} dim must equal the embedding dim {dim}, got {name} shape {tuple(queue.shape)}"
        )
    return queue


def check_temperature(name: str, value: object) -> float:
    """Raise unless `value` is a finite real number > 0; return it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_coefficient(name: str, value: object) -> float:
    """Raise unless `value` is a finite real number >= 0 (a loss weight); return it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_count(name: str, value: object, minimum: int) -> int:
    """Raise unless `value` is an integer (not bool) >= `minimum`; return it as an int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_unit_interval(name: str, value: object) -> float:
    """Raise unless `value` is a real number in [0, 1]; return it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def check_targets(
    targets: object, n: int, device: torch.device, check_values: bool = True
) -> Tensor | None:
    """Validate i-Mix virtual labels for a batch of `n` anchors over `n` keys.

    Returns None (identity: anchor i's positive is key i), a (n,) int64 index tensor, or a
    (n, n) floating soft-label tensor whose rows are non-negative and sum to 1, on `device`.
    Type, dtype and shape are always checked; the value checks (indices in range, rows
    non-negative summing to 1) read one boolean back from the device (one host sync) and run only
    when `check_values` is True.
    """
    if targets is None:
        return None
    if not isinstance(targets, Tensor):
        raise ValueError(f"targets must be None or a torch.Tensor, got {type(targets).__name__}")
    if targets.dtype == torch.bool or targets.is_complex():
        raise ValueError(
            f"targets must be int64 indices (N,) or float soft labels (N, N), got dtype {targets.dtype}"
        )
    if targets.is_floating_point():
        if targets.shape != (n, n):
            raise ValueError(
                f"soft targets must have shape (N, N) = ({n}, {n}), got {tuple(targets.shape)}"
            )
        targets = targets.to(device)
        if not check_values:
            return targets
        row_sums = targets.sum(
            dim=1, dtype=torch.float64 if targets.dtype == torch.float64 else torch.float32
        )
        bad = ((row_sums - 1).abs() > ROW_SUM_TOLERANCE).any() | (targets < 0).any()
        if bool(bad):
            raise ValueError(
                "soft targets must be non-negative with rows summing to 1, got row sums in "
                f"[{row_sums.min().item():.6g}, {row_sums.max().item():.6g}] and minimum "
                f"{targets.min().item():.6g}"
            )
        return targets
    if targets.shape != (n,):
        raise ValueError(f"index targets must have shape (N,) = ({n},), got {tuple(targets.shape)}")
    targets = targets.to(device=device, dtype=torch.long)
    if check_values and bool(((targets < 0) | (targets >= n)).any()):
        raise ValueError(
            f"index targets must lie in [0, {n}), got values in "
            f"[{targets.min().item()}, {targets.max().item()}]"
        )
    return targets


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64 (so gradcheck works), else float32 (also for fp16/bf16)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _autocast_available(device_type: str) -> bool:
    # torch.amp.is_autocast_available appeared in torch 2.4; older torch knows cpu and cuda.
    is_available = getattr(torch.amp, "is_autocast_available", None)
    if is_available is not None:
        return bool(is_available(device_type))
    return device_type in ("cpu", "cuda")


@contextlib.contextmanager
def autocast_disabled(device: torch.device) -> Iterator[None]:
    """Switch autocast off for `device`'s type, so matmuls run in the dtype we cast to."""
    if _autocast_available(device.type):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:
        yield


def l2_normalize(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Rows of `x` cast to `dtype` and scaled to unit L2 norm; rows with norm < NORM_EPS stay ~0."""
    x = x.to(dtype)
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(NORM_EPS)
