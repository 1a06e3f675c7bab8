"""Batched color and intensity ops with one explicit parameter per sample (kornia's ``enhance``).

Images are float (N, C, H, W) on the [0, 1] scale. Each op follows the definition of the
torchvision.transforms.v2.functional op of the same name, applied per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from contrastkit.augment._checks import check_images, check_per_sample

# ITU-R 601-2 luma weights, the ones torchvision's rgb_to_grayscale uses.
LUMA_WEIGHTS: tuple[float, float, float] = (0.2989, 0.587, 0.114)

# Column of each op in a (N, 4) jitter-factor tensor and its value in an (N, 4) order tensor.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3


def _per_sample(value: Tensor, images: Tensor) -> Tensor:
    """(N,) -> (N, 1, 1, 1) in the images' dtype, for broadcasting over C, H, W."""
    return value.to(images.dtype).view(-1, 1, 1, 1)


def _luma(images: Tensor) -> Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) grayscale, with torchvision's weights and summation order."""
    r, g, b = images.unbind(dim=1)
    return (
        r.mul(LUMA_WEIGHTS[0])
        .add_(g, alpha=LUMA_WEIGHTS[1])
        .add_(b, alpha=LUMA_WEIGHTS[2])
        .unsqueeze(1)
    )


def _blend(images: Tensor, factor: Tensor, reference: Tensor) -> Tensor:
    """clamp(factor * images + (1 - factor) * reference, 0, 1): torchvision's ``_blend``.

    factor: (N,); reference broadcasts against images ((N, 1, 1, 1) or (N, 1, H, W)).
    """
    f = _per_sample(factor, images)
    return torch.addcmul(reference * (1.0 - f), images, f).clamp_(0.0, 1.0)


def _select(images: Tensor, other: Tensor, mask: Tensor) -> Tensor:
    """``other`` where ``mask`` (N,) is set, else ``images``.

    torch.lerp with a 0/1 weight returns either end exactly; on the CPU it is several times
    faster than torch.where with a broadcast boolean mask.
    """
    return torch.lerp(images, other, _per_sample(mask, images))


def _is_zero(values: Tensor) -> Tensor:
    """1.0 where ``values`` (>= 0) is exactly 0, else 0.0, without a slow boolean tensor."""
    return 1.0 - torch.sign(values)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """images * factor, clamped to [0, 1]; factor: (N,) >= 0."""
    check_images(images)
    check_per_sample("factor", factor, images.shape[0])
    return images.mul(_per_sample(factor, images)).clamp_(0.0, 1.0)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blend each sample with the mean of its own grayscale image; factor: (N,) >= 0."""
    check_images(images, rgb=True)
    check_per_sample("factor", factor, images.shape[0])
    mean = _luma(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, factor, mean)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blend each sample with its grayscale image; factor: (N,) >= 0 (0 gives grayscale)."""
    check_images(images, rgb=True)
    check_per_sample("factor", factor, images.shape[0])
    return _blend(images, factor, _luma(images))


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the HSV hue of each sample by ``shift`` (N,) turns, in [-0.5, 0.5]; S and V are kept.

    HSV -> shift -> RGB in closed form: max, min and chroma = max - min of each pixel are kept,
    and channel n becomes max - chroma * w_n, where w_n = clamp(||H - c_n| - 3| - 1, 0, 1) is 1
    within 1 sextant of the channel's centre c_n = 3, 5, 1 (R, G, B) on the hue circle H in [0, 6).
    This equals torchvision's adjust_hue up to float rounding, with float arithmetic only
    (boolean masks and torch.where are an order of magnitude slower on the CPU).
    """
    check_images(images, rgb=True)
    check_per_sample("shift", shift, images.shape[0])
    r, g, b = images.unbind(dim=1)
    max_c = images.amax(dim=1)
    min_c = images.amin(dim=1)
    chroma = max_c - min_c
    # Gray pixels (chroma 0) divide by 1 instead; their hue is irrelevant since chroma scales it out.
    inverse = (chroma + _is_zero(chroma)).reciprocal_()
    # Which channel holds the max decides the sextant formula; ties go r, then g, as in torchvision.
    max_is_r = _is_zero(max_c - r)
    max_is_g = _is_zero(max_c - g)
    hue_r = (g - b).mul_(inverse)
    hue_g = (b - r).mul_(inverse).add_(2.0)
    hue_b = (r - g).mul_(inverse).add_(4.0)
    hue = torch.lerp(torch.lerp(hue_b, hue_g, max_is_g), hue_r, max_is_r)
    hue = hue.add_(_per_sample(shift, images).view(-1, 1, 1), alpha=6.0)
    hue = hue.sub_(torch.floor(hue / 6.0), alpha=6.0)  # wrap to [0, 6)
    centres = torch.arange(3, 6, 2, dtype=images.dtype, device=images.device)
    centres = torch.cat([centres, centres.new_ones(1)]).view(1, 3, 1, 1)  # R 3, G 5, B 1
    weight = (hue.unsqueeze(1) - centres).abs_().sub_(3.0).abs_().sub_(1.0).clamp_(0.0, 1.0)
    return torch.addcmul(max_c.unsqueeze(1), chroma.unsqueeze(1), weight, value=-1.0)


def _jitter_plan(
    factors: Tensor, order: Tensor, apply: Tensor, use_hue: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample weights of the blend steps of a color jitter: (factor, luma weight, mean weight),
    each (N, S) for S steps, such that step s maps x to
    clamp(factor * x + luma_weight * luma(x) + mean_weight * mean(luma(x)), 0, 1).

    Brightness, contrast and saturation are all this blend (reference 0, mean luma, luma), so one
    pass serves every sample whatever its op; factor 1 with zero weights is an exact identity.
    With hue, its expensive pass runs once for all samples between two groups of blend steps:
    positions 0-2 for the ops placed before hue, then positions 1-3 for the ops placed after it.
    """
    if use_hue:
        # Built from slices and aranges on the device: a Python list index would be a host copy.
        op = torch.cat([order[:, 0:3], order[:, 1:4]], dim=1)
        hue_position = (order == HUE).to(torch.int64).argmax(dim=1, keepdim=True)
        step_positions = torch.arange(3, device=order.device)
        before = hue_position > step_positions
        after = hue_position < step_positions + 1
        active = torch.cat([before, after], dim=1)
    else:
        op = order
        active = torch.ones_like(order, dtype=torch.bool)
    is_blend = active & apply.unsqueeze(1) & (op != HUE)
    factor = factors.gather(1, op.clamp(max=SATURATION))
    factor = torch.where(is_blend, factor, torch.ones_like(factor))
    complement = 1.0 - factor
    luma_weight = (is_blend & (op == SATURATION)).to(factor.dtype) * complement
    mean_weight = (is_blend & (op == CONTRAST)).to(factor.dtype) * complement
    return factor, luma_weight, mean_weight


def _jitter_step(
    images: Tensor, factor: Tensor, luma_weight: Tensor, mean_weight: Tensor
) -> Tensor:
    """One blend step of ``_jitter_plan`` with its (N,) weights."""
    luma = _luma(images)
    mean = luma.mean(dim=(1, 2, 3), keepdim=True)
    reference = torch.addcmul(
        mean * _per_sample(mean_weight, images), luma, _per_sample(luma_weight, images)
    )
    return torch.addcmul(reference, images, _per_sample(factor, images)).clamp_(0.0, 1.0)


def color_jitter(
    images: Tensor,
    factors: Tensor,
    order: Tensor,
    apply: Tensor | None = None,
    use_hue: bool = True,
    compact: bool | None = None,
) -> Tensor:
    """torchvision's ColorJitter, with its own factors and op order per sample.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        factors: (N, 4) float: brightness, contrast, saturation factors (>= 0, 1 = unchanged)
            and hue shift (turns, in [-0.5, 0.5]).
        order: (N, 4) int64, each row a permutation of 0..3 (brightness, contrast, saturation, hue):
            the op applied at each position.
        apply: (N,) bool, which samples are jittered at all; None = all.
        use_hue: False skips the hue op for every sample (a recipe with hue strength 0).
        compact: compute each step only on the samples it changes (gather, compute, scatter back).
            That needs data-dependent shapes, free on the CPU but a device sync on a GPU, where every
            step instead runs on the whole batch with identity weights. None = compact on the CPU.

    Returns:
        (N, 3, H, W) float in [0, 1].
    """
    check_images(images, rgb=True)
    n = images.shape[0]
    check_per_sample("factors", factors, n, (4,))
    check_per_sample("order", order, n, (4,))
    if apply is not None:
        check_per_sample("apply", apply, n)
    if apply is None:
        apply = torch.ones(images.shape[0], dtype=torch.bool, device=images.device)
    if compact is None:
        compact = images.device.type == "cpu"
    factor, luma_weight, mean_weight = _jitter_plan(factors, order, apply, use_hue)
    steps = factor.shape[1]
    hue_after = 3 if use_hue else steps  # the hue pass sits between steps 2 and 3
    if compact:
        images = images.clone()  # updated in place below; the caller's tensor stays as it was
    for step in range(steps):
        if step == hue_after:
            if compact:
                _update_subset(images, apply, adjust_hue, factors[:, HUE])
            else:
                images = _select(images, adjust_hue(images, factors[:, HUE]), apply)
        weights = (factor[:, step], luma_weight[:, step], mean_weight[:, step])
        if compact:
            # Factor 1 is the identity (inactive steps have factor 1 and zero weights).
            _update_subset(images, weights[0] != 1.0, _jitter_step, *weights)
        else:
            images = _jitter_step(images, *weights)
    return images


def _update_subset(
    images: Tensor, mask: Tensor, op: Callable[..., Tensor], *per_sample: Tensor
) -> None:
    """In place: images[mask] = op(images[mask], *(p[mask] for p in per_sample))."""
    index = torch.nonzero(mask).squeeze(1)
    if index.numel() > 0:
        images[index] = op(images[index], *(p[index] for p in per_sample))


def rgb_to_grayscale(images: Tensor, apply: Tensor | None = None) -> Tensor:
    """(N, 3, H, W) -> (N, 3, H, W): the luma replicated to 3 channels where ``apply`` (N,) is set."""
    check_images(images, rgb=True)
    if apply is not None:
        check_per_sample("apply", apply, images.shape[0])
    luma = _luma(images).expand_as(images)
    if apply is None:
        return luma.contiguous()
    return _select(images, luma, apply)


def solarize(images: Tensor, apply: Tensor, threshold: float = 0.5) -> Tensor:
    """x -> 1 - x where x >= threshold, for the samples where ``apply`` (N,) is set."""
    check_images(images)
    check_per_sample("apply", apply, images.shape[0])
    # sign(x - t) is exactly 0 only at x == t, so this is the exact x >= t test, as floats.
    at_or_above = torch.sign(images - threshold).add_(1.0).clamp_(max=1.0)
    weight = at_or_above.mul_(_per_sample(apply, images))
    return torch.lerp(images, 1.0 - images, weight)


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(x - mean) / std per channel, in place; mean and std have one entry per channel."""
    check_images(images)
    if len(mean) != images.shape[1] or len(std) != images.shape[1]:
        raise ValueError(
            f"mean and std need one entry per channel ({images.shape[1]}), got {len(mean)} and {len(std)}"
        )
    # Python scalars per channel rather than a (C,) tensor: no host-to-device copy on CUDA.
    for channel, (m, s) in enumerate(zip(mean, std, strict=True)):
        images[:, channel].sub_(m).div_(s)
    return images
