"""i-Mix (Lee et al., ICLR 2021): mix inputs within a batch and return the matching virtual labels.

The (N, N) targets feed `npair_loss`, `moco_loss` and `byol_loss`: row i says how much of sample i
comes from each sample of the batch (its own key on the diagonal, its partner's key off it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from contrastkit.objectives._validation import check_temperature


def _check_batch(x: object, min_ndim: int, what: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise ValueError(f"x must have shape {what}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"x must hold at least one sample, got shape {tuple(x.shape)}")
    return x


def _check_generator(generator: object) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    return generator


def _sample_device(x: Tensor, generator: torch.Generator | None) -> torch.device:
    # A generator only draws on its own device: sample there, then move the few numbers to x.
    return x.device if generator is None else generator.device


def _sample_beta(
    alpha: float, count: int, device: torch.device, generator: torch.Generator | None
) -> Tensor:
    """`count` draws of Beta(alpha, alpha) in float32, as G1 / (G1 + G2) with G ~ Gamma(alpha)."""
    # torch.distributions.Beta cannot take a generator; _standard_gamma can (and is what it uses).
    # float32, not float64: some devices (MPS) have no float64.
    concentration = torch.full((2, count), alpha, dtype=torch.float32, device=device)
    gammas = torch._standard_gamma(concentration, generator=generator)
    # Both gammas can underflow to 0 for small alpha; then lam = 0, which max(lam, 1 - lam) makes 1.
    return gammas[0] / (gammas[0] + gammas[1]).clamp_min(torch.finfo(torch.float32).tiny)


def _mixing_targets(lam: Tensor, permutation: Tensor, dtype: torch.dtype) -> Tensor:
    """(N, N) virtual labels `diag(lam) + (1 - lam) one_hot(permutation)` (rows sum to 1)."""
    n = permutation.shape[0]
    lam = lam.to(dtype).expand(n)
    targets = torch.diag(lam)
    # accumulate: where permutation[i] == i the row is lam + (1 - lam) = 1 on the diagonal.
    rows = torch.arange(n, device=permutation.device)
    targets.index_put_((rows, permutation), 1 - lam, accumulate=True)
    return targets


def _targets_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def imix_mixup(
    x: Tensor, alpha: float = 1.0, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """i-Mix input mixup for any batch x: (N, ...) floating (images, tabular rows, spectrograms).

    Per sample: `lam_i ~ Beta(alpha, alpha)`, `lam_i = max(lam_i, 1 - lam_i)`, a random
    permutation j, `mixed_i = lam_i x_i + (1 - lam_i) x_j(i)`.
    Returns (mixed (N, ...) in x's dtype, targets (N, N) = diag(lam) + (1 - lam) one_hot(j)),
    targets float32 (float64 for float64 x), on x's device.

    alpha: > 0. generator: None draws from the global RNG on x's device; a generator draws on its
    own device (e.g. a CPU generator for a CUDA batch) and the 2N + N numbers are then moved to x.
    """
    x = _check_batch(x, 1, "(N, ...)")
    if not x.is_floating_point():
        raise ValueError(f"x must have a floating dtype for mixup, got {x.dtype}")
    alpha = check_temperature("alpha", alpha)
    generator = _check_generator(generator)
    n = x.shape[0]
    device = _sample_device(x, generator)
    lam = _sample_beta(alpha, n, device, generator)
    lam = torch.maximum(lam, 1 - lam).to(x.device)
    permutation = torch.randperm(n, generator=generator, device=device).to(x.device)
    lam_x = lam.to(x.dtype).view(n, *([1] * (x.ndim - 1)))
    mixed = lam_x * x + (1 - lam_x) * x[permutation]
    return mixed, _mixing_targets(lam, permutation, _targets_dtype(x))


def imix_cutmix(
    x: Tensor, alpha: float = 1.0, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """i-Mix CutMix for images x: (N, C, H, W) (any leading dims, last two are H, W; any dtype).

    One `lam ~ Beta(alpha, alpha)`, `lam = max(lam, 1 - lam)`, for the whole batch; one box of
    about (1 - lam) of the area, centred uniformly (and clipped at the border), is pasted into
    every x_i from x_j(i) for a random permutation j. The area actually pasted gives the
    corrected `lam = 1 - box_area / (H W)`, and targets = lam I + (1 - lam) one_hot(j) (N, N).
    Returns (mixed, same shape and dtype as x; targets float32, float64 for float64 x).

    Everything stays on x's device without a host sync (the box is a mask, not a Python slice).
    generator: as in `imix_mixup`.
    """
    x = _check_batch(x, 3, "(N, C, H, W)")
    alpha = check_temperature("alpha", alpha)
    generator = _check_generator(generator)
    n, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    device = _sample_device(x, generator)
    lam = _sample_beta(alpha, 1, device, generator)
    lam = torch.maximum(lam, 1 - lam)
    cut_ratio = (1 - lam).sqrt()
    cut_h = (height * cut_ratio).long()
    cut_w = (width * cut_ratio).long()
    centre_y = torch.randint(0, height, (1,), generator=generator, device=device)
    centre_x = torch.randint(0, width, (1,), generator=generator, device=device)
    top, bottom = (centre_y - cut_h // 2).clamp(0, height), (centre_y + cut_h // 2).clamp(0, height)
    left, right = (centre_x - cut_w // 2).clamp(0, width), (centre_x + cut_w // 2).clamp(0, width)
    permutation = torch.randperm(n, generator=generator, device=device)
    box = torch.stack([top, bottom, left, right]).to(x.device)
    permutation = permutation.to(x.device)
    rows = torch.arange(height, device=x.device).view(height, 1)
    cols = torch.arange(width, device=x.device).view(1, width)
    mask = (rows >= box[0]) & (rows < box[1]) & (cols >= box[2]) & (cols < box[3])  # (H, W)
    mixed = torch.where(mask, x[permutation], x)
    pasted = ((box[1] - box[0]) * (box[3] - box[2])).to(torch.float32)
    lam = 1 - pasted / math.prod((height, width))
    return mixed, _mixing_targets(lam, permutation, _targets_dtype(x))
