"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms on raw embeddings.

The function and its `nn.Module`. Variance and covariance cover the global batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastkit.objectives._batch_statistics import (
    check_views_for_batch_statistics,
    off_diagonal_square_sum,
)
from contrastkit.objectives._validation import (
    autocast_disabled,
    check_coefficient,
    check_temperature,
    compute_dtype,
)
from contrastkit.objectives.distributed import all_gather_with_grad


def vicreg_loss(
    z1: Tensor,
    z2: Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
) -> Tensor:
    """VICReg: `sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance`.

    z1, z2: (N, D) expander outputs of two views, used as they are (no normalisation).
    - invariance: `mean_{n,d} (z1_nd - z2_nd)^2` (mean squared error over N * D entries);
    - variance: `sum over the two views of mean_d relu(1 - sqrt(var_d + eps)) / 2`, var_d the
      unbiased (N - 1) variance of feature d over the batch;
    - covariance: `sum over the two views of sum_{i != j} C_ij^2 / D`, C the (D, D) unbiased
      covariance matrix of the batch.

    Follows facebookresearch/vicreg main_vicreg.py (`VICReg.forward`): `F.mse_loss(x, y)` on this
    rank's batch, then x and y gathered from all GPUs with gradient (`FullGatherLayer`), centred,
    `std = sqrt(var + 0.0001)`, `std_loss = mean(relu(1 - std_x)) / 2 + mean(relu(1 - std_y)) / 2`,
    `cov = x.T @ x / (batch_size - 1)`, off-diagonal squares summed and divided by D for each
    view (no 1/2 there), coefficients `--sim-coeff 25 --std-coeff 25 --cov-coeff 1`.
    The paper's loss writes `mu * [v(Z) + v(Z')]` without that 1/2, and solo-learn
    (solo/losses/vicreg.py) follows the paper: its `var_loss_weight` w is `std_coeff = 2 * w`
    here (its CIFAR recipe's 25 is 50 here).

    Distributed: with W > 1 ranks both views are all-gathered with gradient, so variance and
    covariance are those of the global batch of W*N rows (every rank computes the same value);
    invariance is this rank's mean. Averaging the rank losses, and the parameter gradients (as
    DDP does), gives the full-batch loss and its gradient. All ranks must pass the same N.

    Math in float32 (float64 stays float64) with autocast off: squared covariances of fp16
    embeddings overflow in fp16, not here. Returns a float32 scalar (float64 if an input is
    float64).
    """
    total = check_views_for_batch_statistics(z1, z2)
    sim_coeff = check_coefficient("sim_coeff", sim_coeff)
    std_coeff = check_coefficient("std_coeff", std_coeff)
    cov_coeff = check_coefficient("cov_coeff", cov_coeff)
    eps = check_temperature("eps", eps)
    dim = z1.shape[1]
    dtype = compute_dtype(z1, z2)
    with autocast_disabled(z1.device):
        a, b = z1.to(dtype), z2.to(dtype)
        invariance = (a - b).square().mean()
        # One gather for both views: (W*N, 2, D), ranks in order.
        gathered = all_gather_with_grad(torch.stack([a, b], dim=1))
        variance = covariance = 0.0
        for view in gathered.unbind(dim=1):
            centered = view - view.mean(dim=0)
            cov = centered.T @ centered / (total - 1)
            # cov's diagonal is the unbiased per-feature variance, as `view.var(dim=0)`.
            std = torch.sqrt(cov.diagonal() + eps)
            variance = variance + torch.relu(1 - std).mean() / 2
            covariance = covariance + off_diagonal_square_sum(cov) / dim
        return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance


class VICRegLoss(nn.Module):
    """`vicreg_loss` with fixed coefficients; forward(z1 (N, D), z2 (N, D)) -> scalar.

    Defaults are the paper's and facebookresearch/vicreg's (25, 25, 1, eps 1e-4).
    """

    def __init__(
        self,
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        self.sim_coeff = check_coefficient("sim_coeff", sim_coeff)
        self.std_coeff = check_coefficient("std_coeff", std_coeff)
        self.cov_coeff = check_coefficient("cov_coeff", cov_coeff)
        self.eps = check_temperature("eps", eps)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return vicreg_loss(z1, z2, self.sim_coeff, self.std_coeff, self.cov_coeff, self.eps)

    def extra_repr(self) -> str:
        return (
            f"sim_coeff={self.sim_coeff}, std_coeff={self.std_coeff}, "
            f"cov_coeff={self.cov_coeff}, eps={self.eps}"
        )
