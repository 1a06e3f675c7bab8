"""MoCo v2 (He et al. 2020; Chen et al. 2020): queries against an EMA key encoder's keys and a queue.

Shuffle-BN across processes for the keys (see `shuffled_key_forward`); i-Mix on the queries;
`method.symmetric` adds the other direction with its own queue, as solo-learn's MoCo V2+.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from contrastkit.objectives import MemoryQueue, MomentumTeacher, moco_loss
from contrastkit.pipelines.methods.base import (
    MethodOutput,
    PretrainMethod,
    shuffled_key_forward,
    stacked_label_weights,
    two_views,
)

if TYPE_CHECKING:
    from contrastkit.pipelines.config import MethodConfig, ModelConfig


class MoCo(PretrainMethod):
    """loss = moco_loss(q1, k2, queue, method.temperature, t1), then k2 is enqueued.

    q1: projection of view 1 by the student (mixed by i-Mix when on, t1 its virtual labels);
    k2: projection of view 2 by the momentum encoder (EMA of the student, momentum
    method.momentum), no gradient. `queue` holds the last method.queue_size view-2 keys of all
    ranks. Each network already sees one view per forward, so method.separate_forwards changes
    nothing here.

    method.symmetric (solo-learn `solo/methods/mocov2plus.py`, `training_step`):
        loss = (moco_loss(q1, k2, queue, T, t1) + moco_loss(q2, k1, view1_queue, T, t2)) / 2,
    one queue per direction: the q1 term's negatives are past k2 keys (`queue`), the q2 term's
    past k1 keys (`view1_queue`); both queues are written after the loss. With i-Mix each view
    is mixed as a query batch, view 1 first, as the loop of i-Mix's `builder.py` does under
    `--sym` (which instead shares one queue and sums the two terms). The queries of both views
    go through the student in one forward (and the keys through the key encoder in one
    shuffle-BN forward), or with method.separate_forwards one forward per view.
    """

    name = "moco"
    supports_imix = True
    supports_symmetric = True
    default_augment = "mocov2_views"
    default_temperature = 0.2
    default_momentum = 0.999  # MoCo v2 (main_moco.py --moco-m) and i-Mix (--emam)
    default_final_momentum = None  # constant momentum

    def __init__(
        self, backbone: torch.nn.Module, method: MethodConfig, model: ModelConfig, *, seed: int = 0
    ) -> None:
        super().__init__(backbone, method, model, seed=seed)
        self.teacher = MomentumTeacher(self.encoder)
        self.queue = MemoryQueue(method.queue_size, self.embedding_dim, seed=seed)
        # Its own random start (solo-learn draws both queues at once); in the state_dict, so a
        # resumed run continues with both queues.
        self.view1_queue: MemoryQueue | None = None
        if method.symmetric:
            self.view1_queue = MemoryQueue(method.queue_size, self.embedding_dim, seed=seed + 1)

    def forward(
        self,
        views: list[Tensor],
        *,
        step: int,
        epoch: int = 0,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MethodOutput:
        view1, view2 = two_views(views)
        if self.view1_queue is not None:
            return self._symmetric_forward(view1, view2, self.view1_queue, step, generator)
        queries, targets = self.mix(view1, generator)
        features, q = self.encoder(queries)
        k = shuffled_key_forward(self.teacher, view2, self.key_seed(step))
        loss = moco_loss(
            q,
            k,
            self.queue.keys,
            temperature=self.method_config.temperature,
            targets=targets,
            validate_targets=False,  # made by self.mix: no host sync to check them
        )
        self.queue.enqueue(k)
        return MethodOutput(loss, features.detach(), targets)

    def _symmetric_forward(
        self,
        view1: Tensor,
        view2: Tensor,
        view1_queue: MemoryQueue,
        step: int,
        generator: torch.Generator | None,
    ) -> MethodOutput:
        inputs, (targets1, targets2) = self.mix_both(view1, view2, generator)
        features, queries = self.encode(self.encoder, inputs)
        q1, q2 = queries.chunk(2)
        seed = self.key_seed(step)
        if self.method_config.separate_forwards:
            # One permutation serves both views: shuffle-BN only needs each key normalised in
            # another batch than its query.
            k1 = shuffled_key_forward(self.teacher, view1, seed)
            k2 = shuffled_key_forward(self.teacher, view2, seed)
        else:
            k1, k2 = shuffled_key_forward(self.teacher, torch.cat([view1, view2]), seed).chunk(2)
        temperature = self.method_config.temperature
        loss = (
            moco_loss(q1, k2, self.queue.keys, temperature, targets1, validate_targets=False)
            + moco_loss(q2, k1, view1_queue.keys, temperature, targets2, validate_targets=False)
        ) / 2
        self.queue.enqueue(k2)
        view1_queue.enqueue(k1)
        n = view1.shape[0]
        weights = stacked_label_weights(targets1, targets2, n=n, device=view1.device)
        return MethodOutput(loss, features.detach(), weights)
