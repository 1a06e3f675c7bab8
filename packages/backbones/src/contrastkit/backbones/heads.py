"""Small heads that sit on a backbone's features: projection MLP, BYOL/ISD predictor, linear probe.

Each takes (N, in_dim) features and returns (N, out_dim); none normalises its output
(the losses decide where to L2-normalise).
"""

from __future__ import annotations

import torch
from torch import nn

from contrastkit.backbones._checks import check_bool, check_features_input, check_positive_int


class ProjectionHead(nn.Module):
    """SimCLR / MoCo v2 projection MLP, optionally with i-Mix's BatchNorm on the output.

    `num_layers - 1` hidden blocks of Linear -> [BatchNorm1d] -> ReLU of width `hidden_dim`,
    then a final Linear to `out_dim` (no ReLU), followed by a BatchNorm1d(out_dim) when
    `output_batch_norm` (i-Mix's `mlpbn` head: Linear -> BN -> ReLU -> Linear -> BN). A Linear
    has no bias when a BatchNorm follows it (the BN's shift replaces it; i-Mix keeps the bias,
    which computes the same function). `num_layers=1` is a single Linear (i-Mix's `linbn` with
    the output BN). `output_affine=False` gives that output BatchNorm no scale and shift
    (SimSiam's and MoCo v3's `BatchNorm1d(out_dim, affine=False)`; no effect without
    `output_batch_norm`); `output_bias` overrides the final Linear's bias (default: a bias
    exactly when no output BatchNorm follows; MoCo v3's heads have none either way).

    Parameters, with b = batch_norm, o = output_batch_norm, a = output_affine, d = in_dim if
    num_layers=1 else hidden_dim:
        first hidden: in_dim*hidden_dim + (2*hidden_dim if b else hidden_dim)
        each further hidden: hidden_dim^2 + (2*hidden_dim if b else hidden_dim)
        last: d*out_dim + (out_dim if output_bias else 0) + (2*out_dim if o and a else 0)

    Input: (N, in_dim) float features. Output: (N, out_dim) float projections (batch-normalised
    over the N rows in training mode when `output_batch_norm`).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        batch_norm: bool = True,
        output_batch_norm: bool = False,
        output_affine: bool = True,
        output_bias: bool | None = None,
    ) -> None:
        super().__init__()
        self.in_dim = check_positive_int("in_dim", in_dim)
        check_positive_int("hidden_dim", hidden_dim)
        self.out_dim = check_positive_int("out_dim", out_dim)
        check_positive_int("num_layers", num_layers)
        check_bool("batch_norm", batch_norm)
        check_bool("output_batch_norm", output_batch_norm)
        check_bool("output_affine", output_affine)
        if output_bias is None:
            output_bias = not output_batch_norm
        check_bool("output_bias", output_bias)
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim, bias=output_bias))
        if output_batch_norm:
            layers.append(nn.BatchNorm1d(out_dim, affine=output_affine))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) features -> (N, out_dim) projections."""
        check_features_input(x, self.in_dim, "ProjectionHead")
        return self.layers(x)


class PredictionHead(nn.Module):
    """BYOL / ISD predictor: Linear -> BatchNorm1d -> ReLU -> Linear.

    Parameters: in_dim*hidden_dim + 2*hidden_dim + hidden_dim*out_dim + out_dim
    (the first Linear has no bias because the BN follows it).

    Input: (N, in_dim) float projections. Output: (N, out_dim) float predictions.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim = check_positive_int("in_dim", in_dim)
        check_positive_int("hidden_dim", hidden_dim)
        self.out_dim = check_positive_int("out_dim", out_dim)
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) projections -> (N, out_dim) predictions."""
        check_features_input(x, self.in_dim, "PredictionHead")
        return self.layers(x)


class LinearClassifier(nn.Module):
    """One Linear layer from features to class logits (linear probe / supervised head).

    Parameters: in_dim*num_classes + num_classes.

    Input: (N, in_dim) float features. Output: (N, num_classes) float logits.
    """

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.in_dim = check_positive_int("in_dim", in_dim)
        self.num_classes = check_positive_int("num_classes", num_classes)
        self.linear = nn.Linear(in_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_dim) features -> (N, num_classes) logits."""
        check_features_input(x, self.in_dim, "LinearClassifier")
        return self.linear(x)
