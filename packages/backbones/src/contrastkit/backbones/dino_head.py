"""DINO's head: an MLP to a bottleneck, L2 normalisation, then weight-normalised prototypes.

`DINOHead` (Caron et al. 2021, facebookresearch/dino `vision_transformer.py` and solo-learn
`solo/methods/dino.py`) and `WeightNormLinear`, its last layer, which SwAV's prototypes reuse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contrastkit.backbones._checks import check_bool, check_features_input, check_positive_int


class WeightNormLinear(nn.Module):
    """A Linear layer without bias whose weight rows are `weight_g * weight_v / ||weight_v||`.

    This is `nn.utils.weight_norm(nn.Linear(in_dim, out_dim, bias=False))` (Salimans & Kingma
    2016, norm over each output row), written out so it needs no deprecated hook and its
    state_dict keeps the same names, `weight_g` (out_dim, 1) and `weight_v` (out_dim, in_dim).
    As DINO and solo-learn's SwAV, `weight_g` starts at 1; with `fixed_norm` it stays there
    (requires_grad False), so every row of the effective weight is a unit vector (a prototype)
    and the gradient reaches `weight_v` through the normalisation. `weight_v` starts as a
    default nn.Linear weight. Rows with ||weight_v|| < 1e-12 give ~0 (as `F.normalize`).

    Parameters: out_dim*in_dim + out_dim.

    Input: (N, in_dim) float. Output: (N, out_dim) float, `x @ weight.T`.
    """

    def __init__(self, in_dim: int, out_dim: int, *, fixed_norm: bool = True) -> None:
        super().__init__()
        self.in_dim = check_positive_int("in_dim", in_dim)
        self.out_dim = check_positive_int("out_dim", out_dim)
        self.fixed_norm = check_bool("fixed_norm", fixed_norm)
        self.weight_v = nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach())
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not fixed_norm)

    @property
    def weight(self) -> torch.Tensor:
        """(out_dim, in_dim) effective weight: row k is weight_g[k] * weight_v[k] / ||weight_v[k]||."""
        return self.weight_g * F.normalize(self.weight_v, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) -> (N, out_dim)."""
        check_features_input(x, self.in_dim, "WeightNormLinear")
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, fixed_norm={self.fixed_norm}"


class DINOHead(nn.Module):
    """DINO's projection head: MLP -> L2-normalised bottleneck -> weight-normalised last layer.

    The MLP is, for num_layers >= 2, Linear(in_dim, hidden_dim) -> [BatchNorm1d] -> GELU, then
    `num_layers - 2` blocks Linear(hidden_dim, hidden_dim) -> [BatchNorm1d] -> GELU, then
    Linear(hidden_dim, bottleneck_dim); num_layers = 1 is a single Linear(in_dim, bottleneck_dim).
    Every MLP Linear has a bias (as the original, also before a BatchNorm) and starts from a
    truncated normal of std 0.02 (cut at +-2) with zero bias. The bottleneck is L2-normalised
    (eps 1e-12) and `last_layer` (a `WeightNormLinear`) maps it to `num_prototypes` logits.
    `norm_last_layer=True` (DINO's default) keeps the last layer's norms fixed at 1, so the logits
    are cosines to unit prototypes; False lets them train.

    Defaults are the original's: hidden 2048, bottleneck 256, 3 layers, no BatchNorm.

    Parameters, with b = batch_norm, h = hidden_dim, d = bottleneck_dim, K = num_prototypes
    (num_layers >= 2): in_dim*h + h + (num_layers-2)*(h*h + h) + h*d + d
    + (num_layers-1)*(2*h if b else 0) + K*d + K; num_layers = 1: in_dim*d + d + K*d + K.

    Input: (N, in_dim) float features. Output: (N, num_prototypes) float logits.
    """

    def __init__(
        self,
        in_dim: int,
        num_prototypes: int,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        self.in_dim = check_positive_int("in_dim", in_dim)
        self.num_prototypes = check_positive_int("num_prototypes", num_prototypes)
        check_positive_int("hidden_dim", hidden_dim)
        self.bottleneck_dim = check_positive_int("bottleneck_dim", bottleneck_dim)
        check_positive_int("num_layers", num_layers)
        check_bool("batch_norm", batch_norm)
        self.norm_last_layer = check_bool("norm_last_layer", norm_last_layer)
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            dim = hidden_dim
        layers.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02, a=-2.0, b=2.0)
                nn.init.zeros_(layer.bias)
        self.last_layer = WeightNormLinear(
            bottleneck_dim, num_prototypes, fixed_norm=norm_last_layer
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) features -> (N, num_prototypes) logits."""
        check_features_input(x, self.in_dim, "DINOHead")
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))
