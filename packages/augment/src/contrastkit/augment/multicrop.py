"""Multi-crop view recipes: DINO's and SwAV's 2 global crops followed by N small local crops.

Each function returns one ``ViewRecipe`` per view, globals first; ``MultiViewAugment`` makes the
views of one resolution in one batched call (see ``multiview.py``).
"""

from __future__ import annotations

from typing import Any

from contrastkit.augment.recipes import (
    BLUR_MIN_SIZE,
    ViewRecipe,
    _as_float_pair,
    _blur_p,
    _is_int,
    _with_overrides,
    default_blur_kernel_size,
)

# Both originals crop 96 px local views from 224 px images; other sizes keep that ratio.
LOCAL_TO_GLOBAL = 96 / 224


def default_local_size(size: int) -> int:
    """Local crop side for global views of ``size`` px: 96/224 of it, rounded to the nearest
    int (3 * size / 7 is never a tie), at least 1 px: 224 -> 96, 96 -> 41, 64 -> 27, 32 -> 14."""
    return max(1, round(size * LOCAL_TO_GLOBAL))


def _check_crops(
    size: int, num_local: int, local_size: int | None, global_scale: Any, local_scale: Any
) -> tuple[int, tuple[float, float], tuple[float, float]]:
    """Validate the multi-crop arguments; returns (local size, global scale, local scale)."""
    if not _is_int(size) or size < 1:
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    if not _is_int(num_local) or num_local < 0:
        raise ValueError(f"num_local must be an int >= 0 (0: no local crops), got {num_local!r}")
    if local_size is None:
        local_size = default_local_size(size)
    elif not _is_int(local_size) or local_size < 1:
        raise ValueError(f"local_size must be None or an int >= 1, got {local_size!r}")
    scales = []
    for name, value in (("global_scale", global_scale), ("local_scale", local_scale)):
        low, high = _as_float_pair(name, value)
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"{name} must satisfy 0 < low <= high <= 1, got {value!r}")
        scales.append((low, high))
    return local_size, scales[0], scales[1]


def _multicrop(
    globals_: tuple[ViewRecipe, ViewRecipe],
    local: ViewRecipe,
    num_local: int,
    overrides: dict[str, Any],
) -> tuple[ViewRecipe, ...]:
    """(global 1, global 2, local x num_local) with ``overrides``, every view with one blur kernel."""
    if "crop_scale" in overrides:
        raise ValueError(
            "crop_scale would set global and local crops alike: use global_scale=(low, high) and "
            f"local_scale=(low, high) instead, got crop_scale={overrides['crop_scale']!r}"
        )
    # The originals blur local crops with the global crops' kernel (SwAV: cv2 23 x 23 at 224 and
    # at 96 px; DINO: PIL's blur, no kernel size), so locals are not cut to 10% of their own side.
    overrides = {"blur_kernel_size": default_blur_kernel_size(globals_[0].size), **overrides}
    views = tuple(_with_overrides(v, overrides) for v in globals_)
    local = _with_overrides(local, overrides)
    if num_local > 0 and local.blur_p > 0.0 and local.kernel_size > 2 * local.size - 1:
        raise ValueError(
            f"blur_kernel_size {local.kernel_size} needs local crops of at least "
            f"{(local.kernel_size + 1) // 2} px for reflect padding, got local_size={local.size}"
        )
    return views + (local,) * num_local


def dino_views(
    size: int,
    *,
    num_local: int = 8,
    local_size: int | None = None,
    global_scale: tuple[float, float] = (0.4, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.4),
    blur_min_size: int = BLUR_MIN_SIZE,
    **overrides: Any,
) -> tuple[ViewRecipe, ...]:
    """DINO's multi-crop views (facebookresearch/dino ``DataAugmentationDINO``): 2 global crops of
    ``size`` px, crop scale ``global_scale``, then ``num_local`` local crops of ``local_size`` px
    (None: ``default_local_size(size)``, 96 at 224), crop scale ``local_scale``.

    Every view: flip 0.5, jitter (0.4, 0.4, 0.2, 0.1) p=0.8, gray 0.2, blur sigma 0.1-2 px.
    Global 1: blur p=1.0. Global 2: blur p=0.1, solarize p=0.2. Locals: blur p=0.5.
    Blur only when ``size`` >= ``blur_min_size`` (64; judged on the global size, so all views
    blur or none do); every view uses the global views' kernel (``default_blur_kernel_size(size)``,
    23 at 224) unless ``blur_kernel_size`` is given. ``num_local=0`` gives the 2 globals only.

    ``overrides`` change ViewRecipe fields in every view (not ``size`` or ``crop_scale``).
    Returns ``2 + num_local`` recipes, globals first.
    """
    local_size, global_scale, local_scale = _check_crops(
        size, num_local, local_size, global_scale, local_scale
    )
    common: dict[str, Any] = {"saturation": 0.2}
    first_blur, second_blur, local_blur = (_blur_p(size, p, blur_min_size) for p in (1.0, 0.1, 0.5))
    first = ViewRecipe(size=size, crop_scale=global_scale, blur_p=first_blur, **common)
    second = ViewRecipe(
        size=size, crop_scale=global_scale, blur_p=second_blur, solarize_p=0.2, **common
    )
    local = ViewRecipe(size=local_size, crop_scale=local_scale, blur_p=local_blur, **common)
    return _multicrop((first, second), local, num_local, overrides)


def swav_views(
    size: int,
    *,
    num_local: int = 6,
    local_size: int | None = None,
    global_scale: tuple[float, float] = (0.14, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.14),
    blur_min_size: int = BLUR_MIN_SIZE,
    **overrides: Any,
) -> tuple[ViewRecipe, ...]:
    """SwAV's multi-crop views (facebookresearch/swav ``MultiCropDataset`` with the 800-epoch
    script's ``--nmb_crops 2 6 --size_crops 224 96 --min_scale_crops 0.14 0.05
    --max_scale_crops 1. 0.14``): 2 global crops of ``size`` px, crop scale ``global_scale``,
    then ``num_local`` local crops of ``local_size`` px (None: ``default_local_size(size)``),
    crop scale ``local_scale``.

    Every view: flip 0.5, color distortion s=1 (jitter (0.8, 0.8, 0.8, 0.2) p=0.8, gray 0.2),
    blur p=0.5 with sigma 0.1-2 px, no solarize. Blur only when ``size`` >= ``blur_min_size`` (64),
    with the global views' kernel on every view (23 at 224, SwAV's fixed 23 x 23) unless
    ``blur_kernel_size`` is given. ``num_local=0`` gives the 2 globals only.

    ``overrides`` change ViewRecipe fields in every view (not ``size`` or ``crop_scale``).
    Returns ``2 + num_local`` recipes, globals first.
    """
    local_size, global_scale, local_scale = _check_crops(
        size, num_local, local_size, global_scale, local_scale
    )
    common: dict[str, Any] = {
        "brightness": 0.8,
        "contrast": 0.8,
        "saturation": 0.8,
        "hue": 0.2,
        "blur_p": _blur_p(size, 0.5, blur_min_size),
    }
    view = ViewRecipe(size=size, crop_scale=global_scale, **common)
    local = ViewRecipe(size=local_size, crop_scale=local_scale, **common)
    return _multicrop((view, view), local, num_local, overrides)
