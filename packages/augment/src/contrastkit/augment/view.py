"""One view of an image batch: a recipe's ops applied with given per-sample parameters.

On the CPU the batch is processed in chunks that fit in cache, which is several times faster
than whole-batch passes, and that hold enough samples to spread each chunk's fixed cost (slicing
the parameters, the jitter plan, the subset lookups); the parameters are drawn for the whole batch
first, so the result does not depend on the chunking.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from contrastkit.augment import blur, color, geometry
from contrastkit.augment.params import ViewParams
from contrastkit.augment.recipes import ViewRecipe

# About 1 MiB of float32 per intermediate tensor: fits in L2, so each op reads and writes cache.
CPU_CHUNK_ELEMENTS = 1 << 18
# Large images: up to 4 MiB per tensor to reach 32 samples per chunk. Each chunk has a fixed cost
# of some 100 small ops; with 1 MiB chunks a 96 px batch is 9 images a chunk and that cost took a
# quarter of the time (bench/augment.py: 96 px views/s +15-30% with 32-image chunks, 224 px +40%
# with 6; 32 px images, 85 a chunk, gain nothing from larger ones and lose at 4 MiB).
CPU_CHUNK_MIN_SAMPLES = 32
CPU_CHUNK_MAX_ELEMENTS = 1 << 20


def cpu_chunk_size(pixels: int) -> int:
    """Samples per CPU chunk for `pixels` float32 elements per sample (C x H x W): about 1 MiB
    per tensor, or more, up to 4 MiB, to reach CPU_CHUNK_MIN_SAMPLES; at least 1."""
    cached = CPU_CHUNK_ELEMENTS // pixels
    return max(1, cached, min(CPU_CHUNK_MIN_SAMPLES, CPU_CHUNK_MAX_ELEMENTS // pixels))


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_image_batch(batch: object, name: str = "batch") -> None:
    """Raise ValueError unless ``batch`` is a non-empty (N, C, H, W) uint8 or float tensor."""
    if not isinstance(batch, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(batch).__name__}")
    if batch.ndim != 4:
        raise ValueError(f"{name} must be (N, C, H, W), got shape {tuple(batch.shape)}")
    if batch.dtype != torch.uint8 and batch.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"{name} must be uint8 (0..255) or floating point (0..1), got dtype {batch.dtype}"
        )
    if batch.shape[0] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(batch.shape)}")
    if batch.shape[2] == 0 or batch.shape[3] == 0:
        raise ValueError(f"{name} has no pixels: shape {tuple(batch.shape)}")


def _to_unit_float(images: Tensor) -> Tensor:
    """uint8 0..255 -> float32 0..1; float -> float32 (a new tensor either way)."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    return images.to(torch.float32, copy=True)


def _geometry(images: Tensor, recipe: ViewRecipe, params: ViewParams) -> Tensor:
    """Crop and flip: (n, C, H, W) any dtype -> (n, C, size, size) float32 in [0, 1]."""
    flip = params.flip if recipe.flip_p > 0.0 else None
    size = recipe.size
    if recipe.crop == "padded":
        # Gathering before the float conversion moves 4x fewer bytes for uint8 input.
        return _to_unit_float(
            geometry.padded_crop(images, params.boxes[:, :2], size, recipe.crop_padding, flip)
        )
    height, width = images.shape[-2:]
    if recipe.crop == "none" and height == size and width == size:
        images = _to_unit_float(images)
        return images if flip is None else geometry.horizontal_flip(images, flip)
    return geometry.resized_crop(_to_unit_float(images), params.boxes, size, flip)


def _color(images: Tensor, recipe: ViewRecipe, params: ViewParams) -> Tensor:
    """The photometric ops of ``recipe``, in torchvision's SimCLR/BYOL order."""
    if recipe.uses_jitter:
        images = color.color_jitter(
            images, params.factors, params.order, params.jitter, use_hue=recipe.hue > 0.0
        )
    if recipe.gray_p > 0.0:
        images = color.rgb_to_grayscale(images, params.gray)
    if recipe.blur_p > 0.0:
        images = blur.gaussian_blur(images, params.sigma, recipe.kernel_size)
    if recipe.solarize_p > 0.0:
        images = color.solarize(images, params.solarize, recipe.solarize_threshold)
    return images


def apply_view(
    batch: Tensor,
    recipe: ViewRecipe,
    params: ViewParams,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Apply ``recipe`` to ``batch`` with the per-sample ``params`` and normalize.

    Args:
        batch: (N, C, H, W) uint8 (0..255) or float (0..1), any device; C = 3 if the recipe
            has color ops.
        recipe: the view's ops.
        params: from ``sample_view_params(recipe, N, H, W, ...)``, on the batch's device.
        mean, std: per-channel normalization on the [0, 1] scale; None for none.
        chunk_size: samples per pass; None = whole batch off the CPU, `cpu_chunk_size` on it.

    Returns:
        (N, C, recipe.size, recipe.size) float32 on the batch's device.
    """
    check_image_batch(batch)
    n, channels, height, width = batch.shape
    if recipe.uses_color and channels != 3:
        raise ValueError(
            f"color jitter and grayscale need RGB input (C = 3), got batch of shape {tuple(batch.shape)}"
        )
    if (mean is None) != (std is None):
        raise ValueError("mean and std must be given together")
    if mean is not None and std is not None:
        if len(mean) != channels or len(std) != channels:
            raise ValueError(
                f"mean and std need one entry per channel ({channels}), got {len(mean)} and {len(std)}"
            )
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be > 0 per channel, got {tuple(std)}")
    if params.boxes.shape[0] != n:
        raise ValueError(f"params are for {params.boxes.shape[0]} samples, batch has {n}")
    if params.boxes.device != batch.device:
        raise ValueError(f"params are on {params.boxes.device}, batch is on {batch.device}")
    if chunk_size is None:
        pixels = channels * max(height * width, recipe.size * recipe.size)
        chunk_size = cpu_chunk_size(pixels) if batch.device.type == "cpu" else n
    elif chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    out = torch.empty(
        n, channels, recipe.size, recipe.size, dtype=torch.float32, device=batch.device
    )
    with torch.no_grad():
        for start in range(0, n, chunk_size):
            part = slice(start, min(start + chunk_size, n))
            part_params = params[part]
            view = _color(_geometry(batch[part], recipe, part_params), recipe, part_params)
            target = out[part]
            target.copy_(view)
            if mean is not None and std is not None:
                color.normalize(target, mean, std)
    return out
