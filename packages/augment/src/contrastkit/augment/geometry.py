"""Batched crops, resizes and flips, one explicit box and flip per sample (kornia's ``geometry``).

Each op equals the torchvision.transforms.v2.functional ops of the same names, applied per sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastkit.augment._checks import check_images, check_per_sample


def _source_coordinates(start: Tensor, length: Tensor, size: int) -> Tensor:
    """(N,) crop starts and lengths -> (N, size) pixel coordinates sampled by a bilinear resize.

    align_corners=False: output pixel i looks at start + (i + 0.5) * length / size - 0.5, clamped to
    the crop, so the border replicates the crop's own edge pixels as torchvision's resize does.
    """
    steps = torch.arange(size, device=start.device, dtype=torch.float32).add_(0.5) / size
    coords = start.unsqueeze(1) + steps * length.unsqueeze(1) - 0.5
    low = start.unsqueeze(1)
    return torch.maximum(torch.minimum(coords, low + length.unsqueeze(1) - 1.0), low)


def _antialias_weights(start: Tensor, length: Tensor, in_size: int, size: int) -> Tensor:
    """(N, size, in_size) row-stochastic weights of torchvision's antialiased bilinear resize of
    the crop [start, start + length) to ``size`` px: a triangle filter widened by the downscale factor.
    """
    scale = length / size
    support = scale.clamp(min=1.0)
    steps = torch.arange(size, device=start.device, dtype=torch.float32).add_(0.5)
    center = start.unsqueeze(1) + steps * scale.unsqueeze(1)
    pixel = torch.arange(in_size, device=start.device, dtype=torch.float32)
    distance = (pixel.add(0.5) - center.unsqueeze(2)) / support.view(-1, 1, 1)
    weights = (1.0 - distance.abs()).clamp_(min=0.0)
    inside = (pixel >= start.view(-1, 1, 1)) & (pixel < (start + length).view(-1, 1, 1))
    weights = weights * inside
    return weights / weights.sum(dim=2, keepdim=True)


def resized_crop(images: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """Crop a box from each sample, resize it to size x size (bilinear, antialiased), and flip.

    Equals torchvision's ``resized_crop(img, top, left, height, width, [size, size], antialias=True)``
    followed by ``horizontal_flip`` where ``flip`` is set.

    Args:
        images: (N, C, H, W) float.
        boxes: (N, 4) (top, left, height, width) in px, whole numbers inside the image.
        size: output side in px.
        flip: (N,) bool, or None for no flip.

    Returns:
        (N, C, size, size) float.
    """
    check_images(images)
    check_per_sample("boxes", boxes, images.shape[0], (4,))
    if flip is not None:
        check_per_sample("flip", flip, images.shape[0])
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    n, _, height, width = images.shape
    boxes = boxes.to(device=images.device, dtype=torch.float32)
    top, left, box_h, box_w = boxes.unbind(dim=1)
    if height <= size and width <= size:
        # Every crop is upsampled, where antialiasing is a no-op: one bilinear grid_sample does it.
        rows = _source_coordinates(top, box_h, size)
        cols = _source_coordinates(left, box_w, size)
        if flip is not None:
            cols = torch.where(flip.unsqueeze(1), cols.flip(1), cols)
        grid_x = (2.0 * cols + 1.0) / width - 1.0
        grid_y = (2.0 * rows + 1.0) / height - 1.0
        grid = torch.stack(
            (grid_x.unsqueeze(1).expand(n, size, size), grid_y.unsqueeze(2).expand(n, size, size)),
            dim=-1,
        ).to(images.dtype)
        return F.grid_sample(
            images, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
    # Some crop may be downsampled: resize separably with explicit antialiased weight matrices.
    weights_y = _antialias_weights(top, box_h, height, size).to(images.dtype)
    weights_x = _antialias_weights(left, box_w, width, size).to(images.dtype)
    if flip is not None:
        weights_x = torch.where(flip.view(-1, 1, 1), weights_x.flip(1), weights_x)
    return weights_y.unsqueeze(1) @ images @ weights_x.transpose(1, 2).unsqueeze(1)


def padded_crop(
    images: Tensor, top_left: Tensor, size: int, padding: int, flip: Tensor | None = None
) -> Tensor:
    """RandomCrop with zero padding as one batched gather: pixels of the box outside the image are 0.

    Equals torchvision's ``pad(img, padding)`` then ``crop(top + padding, left + padding, size, size)``,
    then ``horizontal_flip`` where ``flip`` is set.

    Args:
        images: (N, C, H, W), any dtype (uint8 stays uint8).
        top_left: (N, 2) int64 (top, left) of the box in image coordinates, in [-padding, H + padding - size].
        size: output side in px.
        padding: zero border in px on each side.
        flip: (N,) bool, or None for no flip.

    Returns:
        (N, C, size, size), the images' dtype.
    """
    check_images(images, floating=False)
    check_per_sample("top_left", top_left, images.shape[0], (2,))
    if flip is not None:
        check_per_sample("flip", flip, images.shape[0])
    if size < 1 or padding < 0:
        raise ValueError(f"size must be >= 1 and padding >= 0, got size={size}, padding={padding}")
    n, channels, _, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)) if padding > 0 else images
    top_left = top_left.to(device=images.device, dtype=torch.int64) + padding
    offsets = torch.arange(size, device=images.device)
    rows = top_left[:, 0:1] + offsets
    cols = top_left[:, 1:2] + offsets
    if flip is not None:
        cols = torch.where(flip.unsqueeze(1), cols.flip(1), cols)
    padded_w = width + 2 * padding
    rows_out = padded.gather(2, rows.view(n, 1, size, 1).expand(n, channels, size, padded_w))
    return rows_out.gather(3, cols.view(n, 1, 1, size).expand(n, channels, size, size))


def horizontal_flip(images: Tensor, flip: Tensor) -> Tensor:
    """Mirror left to right the samples where ``flip`` (N,) bool is set; the others are unchanged.

    Equals torchvision's ``horizontal_flip`` on the flipped samples.

    Args:
        images: (N, C, H, W), any dtype.
        flip: (N,) bool.

    Returns:
        (N, C, H, W), the images' dtype.
    """
    check_images(images, floating=False)
    check_per_sample("flip", flip, images.shape[0])
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)
