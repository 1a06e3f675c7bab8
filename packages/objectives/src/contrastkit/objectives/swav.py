"""SwAV (Caron et al. 2020): swapped prediction of Sinkhorn-Knopp cluster codes over multi-crop views.

`sinkhorn_knopp` (codes over the global batch), `swav_loss`, `normalize_prototypes`, the `SwAVLoss`
module and `SwAVQueue`, the per-rank queue of past embeddings. Follows facebookresearch/swav
main_swav.py (`distributed_sinkhorn` and the loss in `train`, commit 5e073db0): epsilon=0.05,
sinkhorn_iterations=3, temperature=0.1, crops_for_assign=[0, 1]; solo-learn solo/losses/swav.py
and solo/utils/sinkhorn_knopp.py compute the same.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from contrastkit.objectives._multicrop import check_crops, cross_crop_cross_entropy
from contrastkit.objectives._validation import (
    autocast_disabled,
    check_count,
    check_embeddings,
    check_same_device,
    check_temperature,
    compute_dtype,
    l2_normalize,
)
from contrastkit.objectives.distributed import all_reduce_no_grad


def _logsumexp_over_all_samples(log_q: Tensor) -> Tensor:
    """(n, K) on each rank -> (1, K): log of each prototype's total mass over every rank's rows."""
    top = all_reduce_no_grad(log_q.amax(dim=0, keepdim=True), "max")
    mass = all_reduce_no_grad((log_q - top).exp().sum(dim=0, keepdim=True))
    return top + mass.log()


def sinkhorn_knopp(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """SwAV's codes: an equipartition of the samples over the prototypes, by Sinkhorn-Knopp.

    scores: (N, K) prototype scores (dot products of unit embeddings with unit prototypes), no
    gradient (computed under no_grad, as the original). epsilon: > 0, the entropy weight
    (`Q = exp(scores / epsilon)`); iterations: >= 1 alternations of "every prototype holds 1/K of the
    mass over the whole batch" and "every sample holds 1/B". Returns codes (N, K), each row a
    probability distribution over the K prototypes (the original's final `Q *= B`).

    Distributed: the batch is the union of every rank's rows (each rank may pass a different N);
    the per-prototype sums are all-reduced, as facebookresearch/swav's `distributed_sinkhorn`, so
    each rank gets its rows of the codes of the full batch. To use a queue, pass
    `cat([queue_scores, scores])` and keep the last N rows, as the original.

    Same iterations as the original, run in the log domain: the original's `exp(scores / epsilon)`
    overflows float32 once a score exceeds 88 * epsilon (e.g. cosine 1 at epsilon 0.01); here every
    step subtracts a log-sum-exp, so codes stay finite and equal the original wherever it is finite.
    Its first division by the total sum and the 1/K, 1/B factors cancel in the next normalisation
    and are left out. Float32 math (float64 stays float64) with autocast off.
    """
    check_embeddings("scores", scores, "(N, K)")
    epsilon = check_temperature("epsilon", epsilon)
    iterations = check_count("iterations", iterations, 1)
    dtype = compute_dtype(scores)
    with torch.no_grad(), autocast_disabled(scores.device):
        log_q = scores.detach().to(dtype) / epsilon
        for _ in range(iterations):
            log_q = log_q - _logsumexp_over_all_samples(log_q)  # prototypes: equal mass
            log_q = torch.log_softmax(log_q, dim=1)  # samples: each row sums to 1
        return log_q.exp()


def _check_crops_for_assign(crops_for_assign: object, num_crops: int | None) -> tuple[int, ...]:
    """Distinct ints >= 0 (and < num_crops when given), at least one; returned as a tuple."""
    if isinstance(crops_for_assign, Tensor | str) or not isinstance(crops_for_assign, Sequence):
        raise ValueError(
            "crops_for_assign must be a list or tuple of crop indices, "
            f"got {type(crops_for_assign).__name__}"
        )
    indices = list(crops_for_assign)
    valid = all(
        isinstance(i, numbers.Integral)
        and not isinstance(i, bool)
        and i >= 0
        and (num_crops is None or i < num_crops)
        for i in indices
    )
    if not indices or not valid or len(set(indices)) != len(indices):
        bound = f"[0, {num_crops}) (indices into scores)" if num_crops is not None else ">= 0"
        raise ValueError(
            f"crops_for_assign must hold at least one distinct int in {bound}, "
            f"got {crops_for_assign!r}"
        )
    return tuple(int(i) for i in indices)


def swav_loss(
    scores: Sequence[Tensor],
    codes: Sequence[Tensor],
    temperature: float = 0.1,
    crops_for_assign: Sequence[int] | None = None,
) -> Tensor:
    """SwAV swapped prediction: each assigned crop's codes are predicted from every other crop.

    scores: S >= 2 tensors (N, K), the prototype scores of every crop (row n of each is the same
    image). codes: C tensors (N, K), the codes of the crops `crops_for_assign` (from
    `sinkhorn_knopp`; detached here). crops_for_assign: C distinct indices into `scores`; None means
    the first C crops (the original's default [0, 1]). temperature: > 0.

    `log p_v = log_softmax(scores_v / temperature)`; the loss is the mean over the C * (S - 1) pairs
    (crop_for_assign c, v != c) of `mean_n -sum_k codes_c[n, k] log p_v[n, k]`, as main_swav.py's
    `subloss / (S - 1)` summed and divided by `len(crops_for_assign)`.

    Distributed: no communication here (the codes already come from the global batch); mean over
    this rank's N rows; DDP averages gradients.

    Returns a float32 scalar (float64 if an input is float64).
    """
    crops = check_crops("scores", scores)
    if len(crops) < 2:
        raise ValueError(
            "scores must hold at least 2 crops (codes are predicted from the other crops), "
            f"got {len(crops)}"
        )
    targets = check_crops("codes", codes)
    check_same_device("scores[0]", crops[0], "codes[0]", targets[0])
    if targets[0].shape != crops[0].shape:
        raise ValueError(
            "codes and scores crops must have the same shape (N, K), got "
            f"{tuple(targets[0].shape)} and {tuple(crops[0].shape)}"
        )
    if crops_for_assign is None:
        if len(targets) > len(crops):
            raise ValueError(
                f"codes must not hold more crops than scores, got {len(targets)} and {len(crops)}"
            )
        crops_for_assign = range(len(targets))
    assigned = _check_crops_for_assign(crops_for_assign, len(crops))
    if len(assigned) != len(targets):
        raise ValueError(
            f"crops_for_assign must name one crop per entry of codes ({len(targets)}), "
            f"got {len(assigned)} indices"
        )
    temperature = check_temperature("temperature", temperature)
    dtype = compute_dtype(*crops, *targets)
    with autocast_disabled(crops[0].device):
        log_probs = [torch.log_softmax(s.to(dtype) / temperature, dim=1) for s in crops]
        return cross_crop_cross_entropy(
            [q.detach().to(dtype) for q in targets], assigned, log_probs
        )


@torch.no_grad()
def normalize_prototypes(weight: Tensor) -> Tensor:
    """In place, rescale every row of the prototype matrix `weight` (K, D) to unit L2 norm; return it.

    Call it before each forward, as main_swav.py does at the start of every iteration (the scores are
    then cosine similarities). Rows with norm < 1e-12 become ~0, as `F.normalize`. Works on an
    `nn.Parameter` (e.g. `prototypes.weight`) without recording autograd history; the storage is
    kept, so optimiser state stays attached.
    """
    check_embeddings("weight", weight, "(K, D)")
    dtype = compute_dtype(weight)
    with autocast_disabled(weight.device):
        weight.copy_(l2_normalize(weight.detach(), dtype))
    return weight


class SwAVLoss(nn.Module):
    """Codes by `sinkhorn_knopp` (optionally with queue rows) and `swav_loss`, with fixed settings.

    forward(scores, queue_scores=None): scores are S >= 2 tensors (N, K) of prototype scores;
    queue_scores (e.g. from `SwAVQueue.scores`) is None or one (L, K) tensor per entry of
    `crops_for_assign`. The codes of crop c are the last N rows of
    `sinkhorn_knopp(cat([queue_scores[i], scores[c].detach()]))`, as main_swav.py.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        iterations: int = 3,
        crops_for_assign: Sequence[int] = (0, 1),
    ) -> None:
        super().__init__()
        self.temperature = check_temperature("temperature", temperature)
        self.epsilon = check_temperature("epsilon", epsilon)
        self.iterations = check_count("iterations", iterations, 1)
        self.crops_for_assign = _check_crops_for_assign(crops_for_assign, None)

    def forward(
        self, scores: Sequence[Tensor], queue_scores: Sequence[Tensor] | None = None
    ) -> Tensor:
        crops = check_crops("scores", scores)
        assigned = _check_crops_for_assign(self.crops_for_assign, len(crops))
        queued: list[Tensor] | None = None
        if queue_scores is not None:
            queued = check_crops("queue_scores", queue_scores, "(L, K)")
            if len(queued) != len(assigned):
                raise ValueError(
                    f"queue_scores must hold one (L, K) tensor per crop for assignment "
                    f"({len(assigned)}), got {len(queued)}"
                )
            check_same_device("queue_scores[0]", queued[0], "scores[0]", crops[0])
            if queued[0].shape[1] != crops[0].shape[1]:
                raise ValueError(
                    f"queue_scores must have K = {crops[0].shape[1]} columns like scores, "
                    f"got shape {tuple(queued[0].shape)}"
                )
        n = crops[0].shape[0]
        codes = []
        for i, crop in enumerate(assigned):
            rows = crops[crop].detach()
            if queued is not None:
                dtype = compute_dtype(rows, queued[i])
                rows = torch.cat([queued[i].detach().to(dtype), rows.to(dtype)])
            codes.append(sinkhorn_knopp(rows, self.epsilon, self.iterations)[-n:])
        return swav_loss(crops, codes, self.temperature, assigned)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, epsilon={self.epsilon}, "
            f"iterations={self.iterations}, crops_for_assign={self.crops_for_assign}"
        )


class SwAVQueue(nn.Module):
    """Per-rank queue of past embeddings for SwAV's codes: `length` rows per crop for assignment.

    Buffers (in `state_dict`): `embeddings` (crops, length, dim) float32, zeros at start; `count`
    () int64, rows pushed so far. As main_swav.py's queue: each rank keeps its own (not gathered;
    `sinkhorn_knopp` sums over ranks), and it is used only once filled (the original waits for its
    last row to be non-zero). Order of rows is irrelevant to Sinkhorn, so this is a ring buffer
    rather than the original's shift. Per rank, use the original's `queue_length // world_size`.

    Each step: `queue_scores = queue.scores(prototypes.weight)` (None until full), the loss, then
    `queue.push([z_c.detach() for c in crops_for_assign])` with the unit embeddings z of the batch.
    """

    embeddings: Tensor
    count: Tensor

    def __init__(self, length: int, dim: int, crops: int = 2) -> None:
        super().__init__()
        self.length = check_count("length", length, 1)
        self.dim = check_count("dim", dim, 1)
        self.crops = check_count("crops", crops, 1)
        self.register_buffer("embeddings", torch.zeros(self.crops, self.length, self.dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @property
    def is_full(self) -> bool:
        """True once `length` rows have been pushed (reads one int from the device)."""
        return int(self.count) >= self.length

    @torch.no_grad()
    def push(self, embeddings: Sequence[Tensor]) -> None:
        """Write one (B, dim) tensor per crop over the oldest rows (only the newest `length` kept)."""
        new = check_crops("embeddings", embeddings, f"(B, {self.dim})")
        if len(new) != self.crops or new[0].shape[1] != self.dim:
            raise ValueError(
                f"embeddings must be {self.crops} tensors of shape (B, {self.dim}), got "
                f"{len(new)} of shape {tuple(new[0].shape)}"
            )
        total = new[0].shape[0]
        kept = min(total, self.length)
        device = self.embeddings.device
        rows = (self.count + (total - kept) + torch.arange(kept, device=device)) % self.length
        values = torch.stack([e.detach()[total - kept :] for e in new])
        self.embeddings.index_copy_(1, rows, values.to(device=device, dtype=self.embeddings.dtype))
        self.count.add_(total)

    @torch.no_grad()
    def scores(self, prototypes: Tensor) -> list[Tensor] | None:
        """[embeddings[c] @ prototypes.T for each crop], each (length, K); None until `is_full`."""
        check_embeddings("prototypes", prototypes, f"(K, {self.dim})")
        if prototypes.shape[1] != self.dim:
            raise ValueError(
                f"prototypes must have shape (K, {self.dim}) to match the queue dim, "
                f"got {tuple(prototypes.shape)}"
            )
        check_same_device("prototypes", prototypes, "queue", self.embeddings)
        if not self.is_full:
            return None
        dtype = compute_dtype(prototypes, self.embeddings)
        with autocast_disabled(prototypes.device):
            weight = prototypes.detach().to(dtype)
            return [queue.to(dtype) @ weight.T for queue in self.embeddings]

    def extra_repr(self) -> str:
        return f"length={self.length}, dim={self.dim}, crops={self.crops}"
