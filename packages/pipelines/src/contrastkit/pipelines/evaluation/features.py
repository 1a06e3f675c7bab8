"""Frozen-feature extraction: run a backbone over a whole in-memory dataset in eval mode, in batches,
and the identity view (normalize only, as in pretraining) that feeds it.

Used by the kNN monitor during pretraining and by the linear probe, t-SNE and neighbour pictures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from contrastkit.augment import make_views

if TYPE_CHECKING:
    from contrastkit.pipelines.data import InMemoryDataset


def view_size(data: InMemoryDataset) -> int:
    """The `size` of the dataset's views: image side (W of (N, C, H, W)) or feature count F."""
    return int(data.inputs.shape[-1]) if data.kind == "image" else int(data.inputs.shape[1])


def in_memory_format(view: Tensor, channels_last: bool) -> Tensor:
    """`view` in channels_last memory format when `channels_last` (as such a pretrain run fed it)."""
    return view.contiguous(memory_format=torch.channels_last) if channels_last else view


def identity_transform(
    view_dataset: str, size: int, channels_last: bool = False
) -> Callable[[Tensor], Tensor]:
    """The normalize-only view of a batch: uint8 images -> normalized floats, tabular rows as they are.

    Args:
        view_dataset: the augment dataset name whose normalization applies ("tabular" for rows).
        size: image side or feature count (`view_size`).
        channels_last: return image views in channels_last memory format.
    """
    views = make_views("identity_views", size, view_dataset)
    return lambda batch: in_memory_format(views(batch)[0], channels_last)


def _module_device(module: nn.Module) -> torch.device | None:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return None


def _single_view(output: object) -> Tensor:
    # View recipes may return a list of views; a one-view list is accepted as that view.
    if isinstance(output, list | tuple) and len(output) == 1:
        output = output[0]
    if not isinstance(output, Tensor):
        kind = (
            f"{type(output).__name__} of {len(output)}"
            if isinstance(output, list | tuple)
            else (type(output).__name__)
        )
        raise ValueError(
            f"transform must return one tensor (a batch of views), got {kind}; "
            "wrap a multi-view recipe as `lambda x: recipe(x)[0]`"
        )
    return output


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    inputs: Tensor,
    *,
    transform: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 512,
    progress: bool = False,
) -> Tensor:
    """Features of every input under `torch.no_grad()` with the backbone in eval mode.

    Each batch is moved to the backbone's device (that of its first parameter or buffer; the
    inputs' device for a module without any), passed through `transform` if given, then
    through the backbone. The train/eval flag of every submodule is restored afterwards, also
    when the forward raises, so a model with some frozen (eval) parts keeps them frozen.
    An autocast context opened by the caller applies (e.g. bf16 on a GPU); the result is
    cast to float32 either way.

    Args:
        backbone: module mapping a batch to (B, D) features.
        inputs: (N, C, H, W) uint8 images or (N, F) float tabular rows. Integer images need a
            `transform` that turns them into the float tensor the backbone was trained on
            (e.g. the identity view of contrastkit.augment), so no silent 0..255 input.
        transform: optional callable applied to each batch on the backbone's device; it may
            return one tensor or a one-element list of views.
        batch_size: samples per forward.
        progress: show a tqdm bar.

    Returns:
        (N, D) float32 features on the inputs' device.
    """
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}")
    if not isinstance(inputs, Tensor):
        raise ValueError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if inputs.ndim not in (2, 4):
        raise ValueError(
            f"inputs must be (N, C, H, W) images or (N, F) tabular rows, "
            f"got shape {tuple(inputs.shape)}"
        )
    if inputs.shape[0] == 0:
        raise ValueError(f"inputs is empty (shape {tuple(inputs.shape)}); nothing to extract")
    if transform is None and not inputs.is_floating_point():
        raise ValueError(
            f"inputs of dtype {inputs.dtype} need a transform to the backbone's float input "
            "(e.g. contrastkit.augment's identity view); got transform=None"
        )
    if transform is not None and not callable(transform):
        raise ValueError(f"transform must be callable or None, got {type(transform).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")

    device = _module_device(backbone)
    if device is None:
        device = inputs.device
    modes = {module: module.training for module in backbone.modules()}
    backbone.eval()
    features: Tensor | None = None
    try:
        starts = range(0, inputs.shape[0], batch_size)
        for start in tqdm(starts, desc="features", disable=not progress, leave=False):
            batch = inputs[start : start + batch_size].to(device, non_blocking=True)
            if transform is not None:
                batch = _single_view(transform(batch))
            out = backbone(batch)
            if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != batch.shape[0]:
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(
                    f"backbone must return (B, D) features for a batch of B={batch.shape[0]}, "
                    f"got {shape}"
                )
            if features is None:
                features = torch.empty(
                    inputs.shape[0], out.shape[1], dtype=torch.float32, device=inputs.device
                )
            features[start : start + batch.shape[0]] = out.float().to(inputs.device)
    finally:
        for module, training in modes.items():
            module.training = training
    assert features is not None  # inputs is non-empty, so the loop ran
    return features
