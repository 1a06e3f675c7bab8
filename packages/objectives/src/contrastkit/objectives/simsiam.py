"""SimSiam (Chen & He 2021): symmetric negative cosine between predictions and stop-gradient projections.

The function and its `nn.Module`; i-Mix virtual labels in the BYOL form are accepted per direction.
"""

from __future__ import annotations

from torch import Tensor, nn

from contrastkit.objectives._validation import (
    autocast_disabled,
    check_embeddings,
    check_same_shape,
    check_targets,
    compute_dtype,
    l2_normalize,
)
from contrastkit.objectives.functional import _target_terms


def simsiam_loss(
    p1: Tensor,
    p2: Tensor,
    z1: Tensor,
    z2: Tensor,
    targets1: Tensor | None = None,
    targets2: Tensor | None = None,
    *,
    validate_targets: bool = True,
) -> Tensor:
    """SimSiam's loss `-(mean_i cos(p1_i, z2_i) + mean_i cos(p2_i, z1_i)) / 2`, in [-1, 1].

    p1, p2: (N, D) predictor outputs of views 1 and 2; z1, z2: (N, D) projector outputs of the
    same views, detached here (the stop-gradient). As facebookresearch/simsiam main_simsiam.py:
    `loss = -(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5` with
    `criterion = nn.CosineSimilarity(dim=1)` and z detached in simsiam/builder.py.

    targets1, targets2: i-Mix virtual labels in BYOL's form (Lee et al. 2021), each None (p_i
    against z_i), (N,) int64 indices or (N, N) soft labels: the p1 direction becomes
    `-mean_i sum_j targets1_ij cos(p1_i, z2_j)`, and likewise p2 against z1 with targets2.
    validate_targets: check the targets' values (indices in range; soft rows non-negative,
        summing to 1), which reads one boolean back from the device, a host sync. False skips
        that check (type, dtype and shape are still checked): for targets that `imix_mixup` /
        `imix_cutmix` made, in a training step that must not wait on the device.

    Cosines are taken in float32 (float64 stays float64) with autocast off, on rows normalised
    with a norm floor of 1e-12 (the original's CosineSimilarity uses eps=1e-8; they differ only for
    near-zero rows).

    Distributed: no communication; per-sample terms, mean over this rank's N rows (DDP's gradient
    average then gives the full-batch gradient).

    Returns a float32 scalar (float64 if an input is float64).
    """
    for name, x in (("p1", p1), ("p2", p2), ("z1", z1), ("z2", z2)):
        check_embeddings(name, x)
    check_same_shape("p1", p1, "z2", z2)
    check_same_shape("p2", p2, "z1", z1)
    check_same_shape("p1", p1, "p2", p2)
    n = p1.shape[0]
    targets1 = check_targets(targets1, n, p1.device, validate_targets)
    targets2 = check_targets(targets2, n, p1.device, validate_targets)
    dtype = compute_dtype(p1, p2, z1, z2)
    with autocast_disabled(p1.device):
        cosine_12, _ = _target_terms(
            l2_normalize(p1, dtype), l2_normalize(z2.detach(), dtype), targets1
        )
        cosine_21, _ = _target_terms(
            l2_normalize(p2, dtype), l2_normalize(z1.detach(), dtype), targets2
        )
        return -(cosine_12.mean() + cosine_21.mean()) / 2


class SimSiamLoss(nn.Module):
    """`simsiam_loss` as a module; forward(p1, p2, z1, z2, targets1=None, targets2=None) -> scalar."""

    def forward(
        self,
        p1: Tensor,
        p2: Tensor,
        z1: Tensor,
        z2: Tensor,
        targets1: Tensor | None = None,
        targets2: Tensor | None = None,
    ) -> Tensor:
        return simsiam_loss(p1, p2, z1, z2, targets1, targets2)
