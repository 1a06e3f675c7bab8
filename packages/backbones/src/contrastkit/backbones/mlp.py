"""TabularMLP: the fully connected encoder for i-Mix's domain-agnostic (tabular) experiments.

Rows of numeric features in, a feature vector out; the contrastive head goes on top.
"""

from __future__ import annotations

import torch
from torch import nn

from contrastkit.backbones._checks import check_features_input, check_positive_int


class TabularMLP(nn.Module):
    """`num_layers` blocks of Linear -> BatchNorm1d -> ReLU, all `width` wide.

    The Linear layers carry no bias because the BatchNorm that follows each one would
    cancel it. Parameters: in_features*width + (num_layers-1)*width^2 + num_layers*2*width.

    Args:
        in_features: number of input columns (54 for Covertype, 28 for HIGGS).
        width: hidden and output width; also `num_features`.
        num_layers: number of Linear-BN-ReLU blocks (i-Mix uses 5).

    Input: (N, in_features) float rows, already standardised.
    Output: (N, width) float features (non-negative: the last op is a ReLU, as after a ResNet's
    final block).
    """

    def __init__(self, in_features: int, width: int = 2048, num_layers: int = 5) -> None:
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        check_positive_int("width", width)
        check_positive_int("num_layers", num_layers)
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers += [
                nn.Linear(in_features if i == 0 else width, width, bias=False),
                nn.BatchNorm1d(width),
                nn.ReLU(inplace=True),
            ]
        self.layers = nn.Sequential(*layers)
        self.num_features: int = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_features) rows -> (N, num_features) features."""
        check_features_input(x, self.in_features, "TabularMLP")
        return self.layers(x)
