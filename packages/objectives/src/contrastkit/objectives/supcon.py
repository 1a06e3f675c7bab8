"""Supervised contrastive loss (Khosla et al., NeurIPS 2020): every same-label embedding is a positive.

Any number of views; without labels each sample is its own class and the loss is SimCLR's NT-Xent
generalised to V views. Positives and negatives come from the global batch under torch.distributed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from contrastkit.objectives._logsumexp import similarity_logsumexp
from contrastkit.objectives._validation import (
    autocast_disabled,
    check_embeddings,
    check_same_shape,
    check_temperature,
    compute_dtype,
    l2_normalize,
)
from contrastkit.objectives.distributed import all_gather_no_grad, all_gather_with_grad, world


def _check_views(features: object) -> list[Tensor]:
    """(N, V, D) tensor or a sequence of V (N, D) tensors -> list of V (N, D) tensors."""
    if isinstance(features, Tensor):
        if features.ndim != 3:
            raise ValueError(
                f"features must have shape (N, V, D) (or be a list of V (N, D) tensors), "
                f"got shape {tuple(features.shape)}"
            )
        if not features.is_floating_point():
            raise ValueError(f"features must have a floating dtype, got {features.dtype}")
        if 0 in features.shape:
            raise ValueError(f"features must be non-empty, got shape {tuple(features.shape)}")
        return list(features.unbind(dim=1))
    if not isinstance(features, (list, tuple)) or len(features) == 0:
        raise ValueError(
            "features must be a (N, V, D) tensor or a non-empty list of V (N, D) tensors, "
            f"got {type(features).__name__}"
            + (" of length 0" if isinstance(features, (list, tuple)) else "")
        )
    views = [check_embeddings(f"features[{i}]", x) for i, x in enumerate(features)]
    for i, view in enumerate(views[1:], start=1):
        check_same_shape("features[0]", views[0], f"features[{i}]", view)
    return views


def _check_labels(labels: object, n: int, views: int, device: torch.device) -> Tensor | None:
    if labels is None:
        if views < 2:
            raise ValueError(
                "features must hold at least 2 views when labels is None (each sample is then its "
                f"own class, and its other views are its only positives), got {views} view"
            )
        return None
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be None or a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor (class ids), got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape (N,) = ({n},), got {tuple(labels.shape)}")
    return labels.to(device=device, dtype=torch.long)


def _global_class_ids(labels: Tensor | None, n: int, views: int, device: torch.device) -> Tensor:
    """Class id of every gathered embedding, in the gathered order (rank, then view, then sample)."""
    _, world_size = world()
    if labels is None:  # sample ids are the classes; known on every rank without communication
        ids = torch.arange(world_size * n, device=device).view(world_size, 1, n)
        return ids.expand(world_size, views, n).reshape(-1)
    return all_gather_no_grad(labels.repeat(views))


def _dense_groups(ids: Tensor) -> Tensor:
    """ids (M,) any integers -> group (M,) in [0, M), equal exactly where ids are equal.

    Sort-based, so no host sync (torch.unique would read the number of classes back).
    """
    sorted_ids, order = torch.sort(ids, stable=True)
    starts = torch.ones_like(sorted_ids, dtype=torch.bool)
    starts[1:] = sorted_ids[1:] != sorted_ids[:-1]
    groups = torch.empty_like(order)
    groups[order] = starts.long().cumsum(dim=0) - 1
    return groups


def supcon_loss(
    features: Tensor | Sequence[Tensor],
    labels: Tensor | None = None,
    temperature: float = 0.1,
    base_temperature: float = 0.07,
) -> Tensor:
    """SupCon's L_out (Khosla et al. 2020, eq. 2) over all V*N embeddings ("all" contrast mode).

    features: (N, V, D) embeddings of V views of N samples, or a list/tuple of V (N, D) tensors;
    L2-normalised here. labels: (N,) integer class ids, or None (each sample its own class:
    SimCLR's NT-Xent generalised to V views; needs V >= 2). Every one of the V*N embeddings a is
    an anchor with positives P(a) = the other embeddings of its class (its other views included)
    and contrast set A(a) = all embeddings except a:
    `loss_a = -(T / T_base) / |P(a)| * sum_{p in P(a)} log(exp(f_a.f_p / T) / sum_{k in A(a)} exp(f_a.f_k / T))`,
    mean over the V*N anchors. An anchor with no positive (a class seen once, V = 1) contributes 0
    and still counts in the mean, as HobbitLong/SupContrast's current losses.py (`mask_pos_pairs`).
    temperature T, base_temperature T_base: > 0. Defaults are SupContrast's CIFAR SupCon command
    (README `main_supcon.py --temp 0.1`; `SupConLoss(base_temperature=0.07)`). With
    base_temperature = temperature, V = 2 and no labels this equals `nt_xent_loss(z1, z2, T)`.

    Follows HobbitLong/SupContrast losses.py (`SupConLoss`, contrast_mode="all"; there is no
    contrast_mode "one" or explicit mask here). solo-learn's SupCon (simclr_loss_func with the
    labels as indexes) instead puts the sum over positives inside the log (the paper's L_in), has
    no T / T_base factor and uses T = 0.2 on CIFAR; lightly's SupConLoss(T, rescale=True) is this
    loss with base_temperature = 1.

    Distributed: with W > 1 ranks the normalised embeddings are gathered WITH gradient and the
    labels without, so positives and negatives come from the whole global batch; the loss is the
    mean over this rank's V*N anchors. All ranks must pass the same N and V; DDP's averaging of
    gradients then gives the gradient of the full-batch loss.

    Returns a float32 scalar (float64 if an input is float64); math in float32 with autocast off.
    """
    views = _check_views(features)
    n, num_views = views[0].shape[0], len(views)
    device = views[0].device
    temperature = check_temperature("temperature", temperature)
    base_temperature = check_temperature("base_temperature", base_temperature)
    labels = _check_labels(labels, n, num_views, device)
    dtype = compute_dtype(*views)
    with autocast_disabled(device):
        local = torch.cat([l2_normalize(view, dtype) for view in views])  # (VN, D), view-major
        keys = all_gather_with_grad(local)  # (W*VN, D), rank order
        rank, _ = world()
        positions = rank * local.shape[0] + torch.arange(local.shape[0], device=device)
        groups = _dense_groups(_global_class_ids(labels, n, num_views, device))
        # Sum and count of each class's embeddings: (M, D) work, never an (M, M) mask.
        class_sum = torch.zeros_like(keys).index_add(0, groups, keys)
        ones = torch.ones(keys.shape[0], dtype=dtype, device=device)
        class_count = torch.zeros_like(ones).index_add(0, groups, ones)
        own = groups[positions]
        positive_count = class_count[own] - 1
        positive_sum = class_sum[own] - local  # the anchor is not its own positive
        anchors = local / temperature
        lse = similarity_logsumexp(anchors, keys, excluded=positions)
        mean_positive_logit = (anchors * positive_sum).sum(dim=1) / positive_count.clamp_min(1)
        has_positive = (positive_count > 0).to(dtype)
        per_anchor = (temperature / base_temperature) * (lse - mean_positive_logit) * has_positive
        return per_anchor.mean()


class SupConLoss(nn.Module):
    """`supcon_loss` with fixed temperatures; forward(features, labels=None) -> scalar."""

    def __init__(self, temperature: float = 0.1, base_temperature: float = 0.07) -> None:
        super().__init__()
        self.temperature = check_temperature("temperature", temperature)
        self.base_temperature = check_temperature("base_temperature", base_temperature)

    def forward(self, features: Tensor | Sequence[Tensor], labels: Tensor | None = None) -> Tensor:
        return supcon_loss(features, labels, self.temperature, self.base_temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, base_temperature={self.base_temperature}"
