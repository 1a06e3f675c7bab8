"""Per-sample random parameters of one view, drawn in one call on the batch's device.

The distributions are torchvision's (RandomResizedCrop, RandomCrop, RandomHorizontalFlip,
ColorJitter, RandomGrayscale, GaussianBlur, RandomSolarize), drawn for a whole batch at once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from contrastkit.augment.recipes import ViewRecipe

# torchvision's RandomResizedCrop draws up to this many (area, ratio) candidates per image.
CROP_TRIES = 10

# Column layout of the one uniform (N, NUM_UNIFORMS) draw per view. Every op owns fixed columns,
# so switching one op off does not shift the random numbers of the others.
_AREA = slice(0, CROP_TRIES)
_LOG_RATIO = slice(CROP_TRIES, 2 * CROP_TRIES)
_TOP, _LEFT, _FLIP, _JITTER = 20, 21, 22, 23
_FACTORS = slice(24, 28)
_ORDER = slice(28, 32)
_GRAY, _BLUR, _SIGMA, _SOLARIZE = 32, 33, 34, 35
NUM_UNIFORMS = 36


@dataclass(frozen=True)
class ViewParams:
    """The random parameters of one view of N samples, all on the batch's device.

    boxes: (N, 4) int64 (top, left, height, width) crop box in input-image px. For a padded crop
        the box may start up to ``crop_padding`` px outside the image (that part is zero-filled).
    flip: (N,) bool horizontal flip.
    jitter: (N,) bool, whether the sample is color-jittered.
    factors: (N, 4) float32 brightness, contrast, saturation factors and hue shift (turns).
    order: (N, 4) int64, per row a permutation of 0..3: the jitter op at each position.
    gray: (N,) bool grayscale.
    sigma: (N,) float32 blur standard deviation in px; 0 = not blurred.
    solarize: (N,) bool solarize.
    """

    boxes: Tensor
    flip: Tensor
    jitter: Tensor
    factors: Tensor
    order: Tensor
    gray: Tensor
    sigma: Tensor
    solarize: Tensor

    def __getitem__(self, index: slice) -> ViewParams:
        """The parameters of samples ``index`` (a slice over N)."""
        return ViewParams(
            boxes=self.boxes[index],
            flip=self.flip[index],
            jitter=self.jitter[index],
            factors=self.factors[index],
            order=self.order[index],
            gray=self.gray[index],
            sigma=self.sigma[index],
            solarize=self.solarize[index],
        )

    @staticmethod
    def cat(parts: Sequence[ViewParams]) -> ViewParams:
        """The parameters of several views stacked along N, in order: (sum of N_i) samples."""
        if not parts:
            raise ValueError("parts must hold at least one ViewParams, got none")
        return ViewParams(
            **{
                f.name: torch.cat([getattr(p, f.name) for p in parts])
                for f in dataclasses.fields(ViewParams)
            }
        )


def _center_fallback(recipe: ViewRecipe, height: int, width: int) -> tuple[int, int]:
    """torchvision's RandomResizedCrop fallback box (height, width) after 10 failed tries."""
    in_ratio = width / height
    low, high = recipe.crop_ratio
    if in_ratio < low:
        return round(width / low), width
    if in_ratio > high:
        return height, round(height * high)
    return height, width


def _resized_crop_boxes(uniform: Tensor, recipe: ViewRecipe, height: int, width: int) -> Tensor:
    """torchvision's RandomResizedCrop box distribution, vectorized over the batch.

    torchvision loops: draw area ~ U(scale) * H * W and log-ratio ~ U(log ratio), round the box
    sides, accept the first box that fits, and after 10 misses fall back to a center crop. Here all
    10 candidates are drawn at once and the first fitting one is picked, which gives exactly the
    same distribution of boxes.
    """
    scale_low, scale_high = recipe.crop_scale
    log_low, log_high = math.log(recipe.crop_ratio[0]), math.log(recipe.crop_ratio[1])
    area = (scale_low + (scale_high - scale_low) * uniform[:, _AREA]) * (height * width)
    ratio = torch.exp(log_low + (log_high - log_low) * uniform[:, _LOG_RATIO])
    box_w = torch.round(torch.sqrt(area * ratio))
    box_h = torch.round(torch.sqrt(area / ratio))
    fits = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
    first = fits.to(torch.int64).argmax(dim=1, keepdim=True)
    found = fits.any(dim=1)
    fallback_h, fallback_w = _center_fallback(recipe, height, width)
    box_h = torch.where(found, box_h.gather(1, first).squeeze(1), float(fallback_h))
    box_w = torch.where(found, box_w.gather(1, first).squeeze(1), float(fallback_w))
    # randint(0, H - h + 1) as floor(u * (H - h + 1)); the clamp guards u rounding up to 1.
    top = torch.minimum(torch.floor(uniform[:, _TOP] * (height - box_h + 1)), height - box_h)
    left = torch.minimum(torch.floor(uniform[:, _LEFT] * (width - box_w + 1)), width - box_w)
    top = torch.where(found, top, float((height - fallback_h) // 2))
    left = torch.where(found, left, float((width - fallback_w) // 2))
    return torch.stack((top, left, box_h, box_w), dim=1).to(torch.int64)


def _padded_crop_boxes(uniform: Tensor, recipe: ViewRecipe, height: int, width: int) -> Tensor:
    """torchvision's RandomCrop(size, padding) box, in image coordinates (may start at -padding)."""
    pad, size = recipe.crop_padding, recipe.size
    span_h = height + 2 * pad - size + 1
    span_w = width + 2 * pad - size + 1
    top = torch.floor(uniform[:, _TOP] * span_h).clamp_(max=span_h - 1) - pad
    left = torch.floor(uniform[:, _LEFT] * span_w).clamp_(max=span_w - 1) - pad
    sides = torch.full_like(top, float(size))
    return torch.stack((top, left, sides, sides), dim=1).to(torch.int64)


def sample_view_params(
    recipe: ViewRecipe,
    batch_size: int,
    height: int,
    width: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> ViewParams:
    """Draw the parameters of one view of ``batch_size`` images of ``height`` x ``width`` px.

    All numbers come from one ``torch.rand`` on ``device`` (default: the generator's device, else
    CPU) with ``generator``, so a CUDA batch never waits on a host-side draw.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height} x {width}")
    if recipe.crop == "padded" and (
        height + 2 * recipe.crop_padding < recipe.size
        or width + 2 * recipe.crop_padding < recipe.size
    ):
        raise ValueError(
            f"a padded crop of size {recipe.size} needs images of at least "
            f"{recipe.size - 2 * recipe.crop_padding} px per side with crop_padding={recipe.crop_padding}, "
            f"got {height} x {width}"
        )
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(batch_size, NUM_UNIFORMS, generator=generator, device=device)

    if recipe.crop == "resized":
        boxes = _resized_crop_boxes(u, recipe, height, width)
    elif recipe.crop == "padded":
        boxes = _padded_crop_boxes(u, recipe, height, width)
    else:
        boxes = torch.zeros(batch_size, 4, dtype=torch.int64, device=device)
        boxes[:, 2] = height
        boxes[:, 3] = width

    # Built from Python scalars on the device: torch.tensor(list, device="cuda") would copy from
    # the host and wait for every queued kernel.
    strengths = (recipe.brightness, recipe.contrast, recipe.saturation)
    ranges = [(max(0.0, 1.0 - s), 1.0 + s) for s in strengths] + [(-recipe.hue, recipe.hue)]
    column = u[:, _FACTORS]
    factors = torch.stack(
        [low + (high - low) * column[:, i] for i, (low, high) in enumerate(ranges)], dim=1
    )

    blurred = u[:, _BLUR] < recipe.blur_p
    sigma_low, sigma_high = recipe.blur_sigma
    sigma = sigma_low + (sigma_high - sigma_low) * u[:, _SIGMA]

    return ViewParams(
        boxes=boxes,
        flip=u[:, _FLIP] < recipe.flip_p,
        jitter=u[:, _JITTER] < recipe.jitter_p,
        factors=factors,
        # argsort of 4 uniforms is a uniformly random permutation, like torchvision's randperm(4).
        order=u[:, _ORDER].argsort(dim=1),
        gray=u[:, _GRAY] < recipe.gray_p,
        sigma=torch.where(blurred, sigma, torch.zeros_like(sigma)),
        solarize=u[:, _SOLARIZE] < recipe.solarize_p,
    )
