"""MoCo v3 (Chen, Xie and He, ICCV 2021): symmetric in-batch InfoNCE of predictions against momentum keys.

No queue: the negatives are the other keys of the (global) batch. The loss is scaled by 2 * temperature
as in the original, so its gradient size does not depend on the temperature.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastkit.objectives._validation import (
    autocast_disabled,
    check_embeddings,
    check_same_shape,
    check_targets,
    check_temperature,
    compute_dtype,
)
from contrastkit.objectives.distributed import all_gather_no_grad
from contrastkit.objectives.functional import _in_batch_infonce


def _checked_targets(
    name: str, targets: object, n: int, query: Tensor, check_values: bool
) -> Tensor | None:
    # check_targets speaks of "targets"; say which of the two directions was wrong.
    try:
        return check_targets(targets, n, query.device, check_values)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def _contrast(
    query: Tensor, key: Tensor, temperature: float, targets: Tensor | None, dtype: torch.dtype
) -> Tensor:
    """One direction, moco-v3's `ctr_loss`: `CE(q @ gather(k).T / T, labels) * 2T`, mean over N.

    Keys are detached and gathered WITHOUT gradient (as the original); the label of query i is
    key rank * N + i, i.e. row i of this rank's block.
    """
    infonce = _in_batch_infonce(
        query, key.detach(), temperature, targets, dtype, all_gather_no_grad
    )
    return infonce * (2 * temperature)


def mocov3_loss(
    q1: Tensor,
    q2: Tensor,
    k1: Tensor,
    k2: Tensor,
    temperature: float = 0.2,
    targets1: Tensor | None = None,
    targets2: Tensor | None = None,
    *,
    validate_targets: bool = True,
) -> Tensor:
    """MoCo v3's symmetric contrastive loss `ctr(q1, k2) + ctr(q2, k1)`.

    q1, q2: (N, D) predictor outputs of the online network for views 1 and 2.
    k1, k2: (N, D) momentum-encoder outputs for views 1 and 2; detached here (the original
    computes them under no_grad), so no gradient reaches them.
    `ctr(q, k) = 2 * T * CE(normalize(q) @ normalize(k).T / T, labels = arange(N))`, the cross
    entropy averaged over the N queries; the sum of the two directions is returned, so a perfect
    match gives 0 and the chance level is `4 * T * log N`.
    temperature: > 0. Default 0.2: moco-v3's ViT recipes (CONFIG.md, `--moco-t=.2`) and
    solo-learn's CIFAR recipe (scripts/pretrain/cifar/mocov3.yaml); moco-v3's ResNet-50 recipe
    uses its `main_moco.py` default `--moco-t 1.0`.
    targets1, targets2: i-Mix virtual labels for `ctr(q1, k2)` and `ctr(q2, k1)`: None (query i's
    positive is key i), (N,) int64 indices or (N, N) soft labels (rows non-negative, summing to 1),
    as in `npair_loss`. Mix view 1's input for q1 (keys of the unmixed views) to use targets1.
    validate_targets: check the targets' values (indices in range; soft rows non-negative,
        summing to 1), which reads one boolean back from the device, a host sync. False skips
        that check (type, dtype and shape are still checked): for targets that `imix_mixup` /
        `imix_cutmix` made, in a training step that must not wait on the device.

    Follows facebookresearch/moco-v3 moco/builder.py (`ctr_loss`, `forward`) and solo-learn
    solo/losses/mocov3.py: L2-normalised q and k, keys all-gathered WITHOUT gradient, labels
    offset by rank * N, loss multiplied by 2 * T.

    Distributed: with W > 1 ranks the keys of all ranks are gathered without gradient, so each
    query has W*N - 1 negatives; the loss is the mean over this rank's N queries. All ranks must
    pass the same N; DDP's gradient averaging then gives the gradient of the full-batch loss.

    Returns a float32 scalar (float64 if an input is float64); math in float32 with autocast off.
    """
    for name, x in (("q1", q1), ("q2", q2), ("k1", k1), ("k2", k2)):
        check_embeddings(name, x)
    check_same_shape("q1", q1, "q2", q2)
    check_same_shape("q1", q1, "k1", k1)
    check_same_shape("q1", q1, "k2", k2)
    temperature = check_temperature("temperature", temperature)
    n = q1.shape[0]
    targets1 = _checked_targets("targets1", targets1, n, q1, validate_targets)
    targets2 = _checked_targets("targets2", targets2, n, q1, validate_targets)
    dtype = compute_dtype(q1, q2, k1, k2)
    with autocast_disabled(q1.device):
        return _contrast(q1, k2, temperature, targets1, dtype) + _contrast(
            q2, k1, temperature, targets2, dtype
        )


class MoCoV3Loss(nn.Module):
    """`mocov3_loss` with a fixed temperature; forward(q1, q2, k1, k2, targets1=None, targets2=None)."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = check_temperature("temperature", temperature)

    def forward(
        self,
        q1: Tensor,
        q2: Tensor,
        k1: Tensor,
        k2: Tensor,
        targets1: Tensor | None = None,
        targets2: Tensor | None = None,
    ) -> Tensor:
        return mocov3_loss(q1, q2, k1, k2, self.temperature, targets1, targets2)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
