"""NNCLR (Dwibedi et al. 2021): each view's nearest neighbour in a support set of past projections
is the positive of the other view's prediction; in-batch negatives, both directions averaged.

The support set is a `MemoryQueue` of view 1's projections and their labels (in the state_dict, so
a resumed run continues with it); the labels give the `nn_top1` metric. i-Mix mixes each view as a
query batch against the neighbours of the clean views (see `NNCLR.forward`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from contrastkit.backbones import PredictionHead
from contrastkit.objectives import MemoryQueue, nearest_neighbours, nnclr_loss, npair_loss
from contrastkit.pipelines.methods.base import (
    MethodOutput,
    PretrainMethod,
    stacked_label_weights,
    two_views,
)

if TYPE_CHECKING:
    from contrastkit.pipelines.config import MethodConfig, ModelConfig


class NNCLR(PretrainMethod):
    """loss = nnclr_loss(z1, z2, p1, p2, support, method.temperature)
    = (ctr(NN(z1), p2) + ctr(NN(z2), p1)) / 2, then z1 is enqueued into the support set.

    z_v = projection of view v, p_v = predictor(z_v); NN(z) = the support row of highest cosine
    similarity, looked up without gradient; ctr(a, p) = CE(a @ p.T / T, arange(N)) on unit rows:
    the neighbours are the anchors, the other view's predictions (of all ranks) the candidates
    (solo-learn `solo/methods/nnclr.py`). The support set holds the last method.queue_size
    normalised view-1 projections of all ranks, written after the loss. Each view goes through
    the encoder and predictor in one forward together, or with method.separate_forwards one
    forward per view (solo-learn).

    Logged (MethodOutput.metrics, metrics.csv `nn_top1`): the percentage of view 1's projections
    whose nearest support row holds a sample of the same class (solo-learn's `train_nn_acc`), from
    the support set the loss read; rows still holding their random initial keys (label -1) count
    as misses. Labels feed only this metric, never the loss; without labels nothing is logged.

    i-Mix (method.imix = mixup | cutmix), our form (no original defines one): the support set's
    rows cannot be mixed, so the mixed predictions are the anchors and the neighbours the keys,
        loss = (npair_loss(p2~, NN(z1), T, t2) + npair_loss(p1~, NN(z2), T, t1)) / 2,
    with p_v~ the predictions of view v mixed within the batch (t_v its virtual labels: mixed
    query i is positive to NN(z1)_i with weight lam_i and to NN(z1)_j(i) with 1 - lam_i) and
    z1, z2 the projections of the clean views, computed in an extra forward without gradient
    (it also looks up the neighbours and fills the support set). Without i-Mix the anchors are
    the neighbours, as in the original; the two forms differ in which side the softmax runs over.

    Heads (the preset): projector Linear -> BN -> ReLU -> Linear -> BN -> ReLU -> Linear -> BN
    (model.projection_layers = 3 with an output BatchNorm), predictor Linear -> BN -> ReLU ->
    Linear of width model.prediction_hidden_dim.
    """

    name = "nnclr"
    supports_imix = True
    default_augment = "byol_views"  # NNCLR takes BYOL's augmentations (paper, section 4)
    default_temperature = 0.1  # paper; solo-learn's CIFAR recipe sets 0.2

    @classmethod
    def preset(cls, method: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """NNCLR's projector (paper and solo-learn): 3 layers with a BatchNorm on every output."""
        return {"model": {"projection_layers": 3, "projection_output_batch_norm": True}}

    def __init__(
        self, backbone: nn.Module, method: MethodConfig, model: ModelConfig, *, seed: int = 0
    ) -> None:
        super().__init__(backbone, method, model, seed=seed)
        dim = self.embedding_dim
        self.predictor = PredictionHead(dim, model.prediction_hidden_dim, dim)
        self.support = MemoryQueue(method.queue_size, dim, seed=seed, track_labels=True)

    def _enqueue(
        self, z1: Tensor, labels: Tensor | None, indices: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The nn_top1 metric against the current support set (with labels), then z1 enqueued
        with its labels (-1 without them). indices: z1's nearest support rows, when the loss
        already looked them up."""
        metrics: dict[str, Tensor] = {}
        if labels is not None:
            assert self.support.labels is not None
            if indices is None:
                indices = nearest_neighbours(z1.detach(), self.support.keys).indices
            hit = self.support.labels[indices] == labels
            metrics["nn_top1"] = 100.0 * hit.float().mean()
        else:
            labels = torch.full((z1.shape[0],), -1, dtype=torch.long, device=z1.device)
        self.support.enqueue(z1, labels)
        return metrics

    def projection_head(self, in_dim: int) -> nn.Module:
        """The model section's projection head; nn.Identity with model.projection_layers = 0 (no
        head, so the preset's output BatchNorm has nothing to follow)."""
        if self.model_config.projection_layers == 0:
            return nn.Identity()
        return super().projection_head(in_dim)

    def forward(
        self,
        views: list[Tensor],
        *,
        step: int,
        epoch: int = 0,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MethodOutput:
        """views: two (N, C, H, W) or (N, F) batches (one is used twice); labels: (N,) classes
        for the support set and nn_top1 (the loss never reads them), or None."""
        view1, view2 = two_views(views)
        temperature = self.method_config.temperature
        if self.method_config.imix == "none":
            features, projections = self.encode(self.encoder, [view1, view2])
            z1, z2 = projections.chunk(2)
            p1, p2 = self.predict_pair(projections)
            loss = nnclr_loss(z1, z2, p1, p2, self.support.keys, temperature)
            metrics = self._enqueue(z1, labels)
            return MethodOutput(loss, features.detach(), metrics=metrics)
        with torch.no_grad():
            _, clean = self.encode(self.encoder, [view1, view2])
        z1, z2 = clean.chunk(2)
        inputs, (targets1, targets2) = self.mix_both(view1, view2, generator)
        features, projections = self.encode(self.encoder, inputs)
        p1, p2 = self.predict_pair(projections)
        neighbours1 = nearest_neighbours(z1, self.support.keys)
        neighbours2 = nearest_neighbours(z2, self.support.keys).values
        loss = (
            npair_loss(p2, neighbours1.values, temperature, targets2, validate_targets=False)
            + npair_loss(p1, neighbours2, temperature, targets1, validate_targets=False)
        ) / 2
        metrics = self._enqueue(z1, labels, neighbours1.indices)
        n = view1.shape[0]
        weights = stacked_label_weights(targets1, targets2, n=n, device=view1.device)
        return MethodOutput(loss, features.detach(), weights, metrics)
