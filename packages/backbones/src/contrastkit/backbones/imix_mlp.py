"""IMixMLP5: i-Mix's `mlp_5layer` tabular encoder (kibok90/imix `models/mlp.py`), rebuilt here.

Column groups each get their own input layer, four Linear-BN-ReLU blocks widen the rows, and a
last Linear followed by maxout over 4 consecutive units gives the features.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from contrastkit.backbones._checks import check_features_input, check_positive_int

INPUT_LAYER_WIDTH = 64
"""Output width of each input layer; fixed in the original whatever its `width` is."""

BASE_WIDTH = 64
"""The original's default `width`; width_multiplier=1.0 builds it (w = 64 * width_multiplier)."""

COVTYPE_INPUT_GROUPS = (10, 4, 40)
"""CovType's column groups in i-Mix: 10 continuous, 4 wilderness-area, 40 soil-type columns."""


class Maxout(nn.Module):
    """Max over consecutive groups of `pool_size` units.

    Input (N, pool_size * K) -> output (N, K): output unit j is the max of input units
    pool_size*j ... pool_size*j + pool_size - 1.
    """

    def __init__(self, pool_size: int) -> None:
        super().__init__()
        self.pool_size = check_positive_int("pool_size", pool_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, pool_size * K) -> (N, K)."""
        if x.ndim != 2 or x.shape[1] % self.pool_size != 0:
            raise ValueError(
                f"Maxout expects (N, C) with C a multiple of {self.pool_size}, got {tuple(x.shape)}"
            )
        return x.unflatten(1, (-1, self.pool_size)).max(dim=2).values

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}"


def width_from_multiplier(width_multiplier: float) -> int:
    """w = 64 * width_multiplier as an int; ValueError unless it is a positive whole number."""
    m = width_multiplier
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m <= 0:
        raise ValueError(f"width_multiplier must be a finite number > 0, got {m!r}")
    width = BASE_WIDTH * m
    if round(width) == 0 or abs(width - round(width)) > 1e-9 * width:
        raise ValueError(
            f"width_multiplier must make w = {BASE_WIDTH} * width_multiplier a whole number "
            f"(the layer widths are 32w, 64w, 128w), got {m!r} -> w = {width:g}; "
            f"use a multiple of 1/{BASE_WIDTH}, e.g. 0.125"
        )
    return round(width)


def _check_input_groups(in_features: int, input_groups: Sequence[int] | None) -> tuple[int, ...]:
    if input_groups is None:
        return ()
    if isinstance(input_groups, (str, bytes)) or not isinstance(input_groups, Sequence):
        raise ValueError(f"input_groups must be a list of ints or None, got {input_groups!r}")
    if len(input_groups) == 0:
        raise ValueError("input_groups must name at least one column group, got []")
    groups = tuple(check_positive_int("input_groups entry", g) for g in input_groups)
    if sum(groups) != in_features:
        raise ValueError(
            f"input_groups {list(groups)} sum to {sum(groups)} columns but in_features is "
            f"{in_features}; they must be equal (use input_groups=None for one ungrouped input "
            "layer, as i-Mix does for HIGGS)"
        )
    return groups


def _linear_bn_relu(in_dim: int, out_dim: int) -> nn.Sequential:
    # The Linear keeps its bias although a BatchNorm follows: the original does (bias=True
    # whenever batchnorm is used), and the parameter count depends on it.
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True))


class IMixMLP5(nn.Module):
    """i-Mix's `mlp_5layer`: grouped input layers, 4 Linear-BN-ReLU blocks, Linear, maxout over 4.

    With w = 64 * width_multiplier (the original's `width`, default 64):
      1. input layers: each column group g gets a plain Linear(g, 64) (bias, no BN, no
         activation); their outputs are concatenated to 64 * len(input_groups) values. The 64
         is **not** scaled by width_multiplier, as the original hard-codes it.
         With input_groups=None there is one input layer Linear(in_features, 64) -> BN -> ReLU,
         the original's form for ungrouped inputs (HIGGS).
      2. body: 4 blocks Linear (with bias) -> BatchNorm1d -> ReLU of widths 32w, 32w, 64w, 64w
         (2048, 2048, 4096, 4096 at width_multiplier=1.0).
      3. last_linear: Linear(64w, 128w) (8192), no BN, no activation.
      4. maxout: max over 4 consecutive units, giving num_features = 32w (2048) features.

    Parameters at width_multiplier=1.0 with CovType's groups (10, 4, 40): 63,356,480.
    In general, with h = (32w, 32w, 64w, 64w, 128w) and h0 = 64 * len(input_groups):
      sum_g (64g + 64) + sum_{i=1..4} (h_{i-1} h_i + 3 h_i) + h4 h5 + h5.
    Initialisation is PyTorch's default (as in the original); BN starts at gamma 1, beta 0.

    Args:
        in_features: number of input columns (54 for CovType).
        input_groups: sizes of consecutive column groups, summing to in_features; default
            CovType's (10, 4, 40). None: one ungrouped input layer (see 1.).
        width_multiplier: scales every width after the input layers; 64 * width_multiplier
            must be a whole number (1.0 = the original; 0.125 gives 256 features for CPU runs).

    Input: (N, in_features) float rows. Output: (N, num_features) float features (maxout, so
    they can be negative).
    """

    def __init__(
        self,
        in_features: int,
        input_groups: Sequence[int] | None = COVTYPE_INPUT_GROUPS,
        width_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.input_groups = _check_input_groups(in_features, input_groups)
        self.width = width_from_multiplier(width_multiplier)
        w = self.width
        if self.input_groups:
            self.input_layers = nn.ModuleList(
                nn.Linear(g, INPUT_LAYER_WIDTH) for g in self.input_groups
            )
        else:
            self.input_layers = nn.ModuleList([_linear_bn_relu(in_features, INPUT_LAYER_WIDTH)])
        widths = [INPUT_LAYER_WIDTH * len(self.input_layers), 32 * w, 32 * w, 64 * w, 64 * w]
        self.body = nn.Sequential(*(_linear_bn_relu(a, b) for a, b in itertools.pairwise(widths)))
        self.last_linear = nn.Linear(64 * w, 128 * w)
        self.maxout = Maxout(4)
        self.num_features: int = 32 * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_features) float rows -> (N, num_features) features."""
        check_features_input(x, self.in_features, "IMixMLP5")
        if not x.is_floating_point():
            raise ValueError(f"IMixMLP5 expects float rows, got dtype {x.dtype}")
        if self.input_groups:
            columns = torch.split(x, self.input_groups, dim=1)
            h = torch.cat([layer(c) for layer, c in zip(self.input_layers, columns)], dim=1)
        else:
            h = self.input_layers[0](x)
        return self.maxout(self.last_linear(self.body(h)))
