"""The contrastive and self-distillation losses as pure functions of tensors.

SimCLR NT-Xent, N-pair (i-Mix's in-batch InfoNCE), MoCo v2, ISD and BYOL; i-Mix targets where defined.
Every loss L2-normalises its embeddings and does the similarity/softmax math in float32 (float64 stays
float64) with autocast off, so fp16/bf16 inputs and autocast regions give the float32 result.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from contrastkit.objectives._logsumexp import similarity_logsumexp
from contrastkit.objectives._validation import (
    autocast_disabled,
    check_embeddings,
    check_queue,
    check_same_device,
    check_same_shape,
    check_targets,
    check_temperature,
    compute_dtype,
    l2_normalize,
)
from contrastkit.objectives.distributed import all_gather_with_grad, world


def _target_terms(
    anchors: Tensor, keys: Tensor, targets: Tensor | None
) -> tuple[Tensor, Tensor | float]:
    """For soft cross-entropy `sum_j t_ij (lse_i - a_i . k_j)`: return (a_i . sum_j t_ij k_j, sum_j t_ij).

    anchors, keys: (N, D); targets as returned by `check_targets`. Works in (N, D), never (N, N).
    """
    if targets is None:
        return (anchors * keys).sum(dim=1), 1.0
    if not targets.is_floating_point():
        return (anchors * keys[targets]).sum(dim=1), 1.0
    soft = targets.to(anchors.dtype)
    return (anchors * (soft @ keys)).sum(dim=1), soft.sum(dim=1)


def _in_batch_infonce(
    query: Tensor,
    key: Tensor,
    temperature: float,
    targets: Tensor | None,
    dtype: torch.dtype,
    gather: Callable[[Tensor], Tensor] = all_gather_with_grad,
) -> Tensor:
    """Mean over this rank's N queries of `sum_j t_ij (lse_i - q_i . k_j / T)`, keys of all ranks.

    query, key: (N, D), L2-normalised here in `dtype`; `gather` collects the normalised keys of all
    ranks ((W*N, D), rank order: `all_gather_with_grad`, or `all_gather_no_grad` for keys that get
    no gradient); targets as returned by `check_targets`, addressing this rank's block of keys.
    The core of `npair_loss`, MoCo v3's `ctr` and NNCLR's loss. Call it with autocast disabled.
    """
    anchors = l2_normalize(query, dtype) / temperature
    local_keys = l2_normalize(key, dtype)
    keys = gather(local_keys)  # (WN, D)
    lse = similarity_logsumexp(anchors, keys)
    target_logit, target_mass = _target_terms(anchors, local_keys, targets)
    return (target_mass * lse - target_logit).mean()


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR NT-Xent (Chen et al. 2020, eq. 1), mean over all 2N anchors.

    z1, z2: (N, D) embeddings of two views; row i of z1 and row i of z2 are a positive pair. Each
    of the 2N embeddings is an anchor whose positive is its partner and whose negatives are the
    2N - 2 other embeddings. temperature: > 0, divides the cosine similarities.

    Distributed: when torch.distributed is initialized with world_size W > 1, the normalised
    embeddings of all ranks are gathered with gradient, so each anchor's negatives are the
    2WN - 2 others of the global batch; this rank's loss is the mean over its own 2N anchors.
    All ranks must pass the same N. Averaging gradients over ranks (as DDP does) then gives the
    gradient of the full-batch loss.

    Returns a float32 scalar (float64 if an input is float64).
    """
    check_embeddings("z1", z1)
    check_embeddings("z2", z2)
    check_same_shape("z1", z1, "z2", z2)
    temperature = check_temperature("temperature", temperature)
    dtype = compute_dtype(z1, z2)
    n = z1.shape[0]
    with autocast_disabled(z1.device):
        local = torch.cat([l2_normalize(z1, dtype), l2_normalize(z2, dtype)])  # (2N, D)
        keys = all_gather_with_grad(local)  # (2WN, D), ranks in order
        rank, _ = world()
        anchors = local / temperature
        self_columns = rank * 2 * n + torch.arange(2 * n, device=local.device)
        lse = similarity_logsumexp(anchors, keys, excluded=self_columns)
        # row i's partner: z2_i for i < N, z1_{i-N} for i >= N, i.e. `local` rolled by N rows.
        positive = (anchors * local.roll(n, dims=0)).sum(dim=1)
        return (lse - positive).mean()


def npair_loss(
    query: Tensor,
    key: Tensor,
    temperature: float = 0.2,
    targets: Tensor | None = None,
    *,
    validate_targets: bool = True,
) -> Tensor:
    """N-pair / in-batch InfoNCE as used by i-Mix: soft cross-entropy of `logits = q @ k.T / T`.

    query, key: (N, D); by default query i's positive is key i and the other keys are negatives.
    targets: None, (N,) int64 indices of each query's positive key, or (N, N) soft labels
    (non-negative rows summing to 1, e.g. from `imix_mixup`). The loss is
    `-(targets * log_softmax(logits)).sum(1).mean()`.
    validate_targets: check the targets' values (indices in range; soft rows non-negative,
        summing to 1), which reads one boolean back from the device, a host sync. False skips
        that check (type, dtype and shape are still checked): for targets that `imix_mixup` /
        `imix_cutmix` made, in a training step that must not wait on the device.

    Distributed: with W > 1 ranks the keys of all ranks are gathered with gradient, so logits are
    (N, W*N) and the extra keys are negatives; `targets` given for the local batch address this
    rank's block of the gathered keys (zero elsewhere). Mean over this rank's N anchors; DDP's
    gradient averaging gives the full-batch gradient with block-diagonal targets.

    Returns a float32 scalar (float64 if an input is float64).
    """
    check_embeddings("query", query)
    check_embeddings("key", key)
    check_same_shape("query", query, "key", key)
    temperature = check_temperature("temperature", temperature)
    targets = check_targets(targets, query.shape[0], query.device, validate_targets)
    dtype = compute_dtype(query, key)
    with autocast_disabled(query.device):
        return _in_batch_infonce(query, key, temperature, targets, dtype)


def moco_loss(
    query: Tensor,
    key: Tensor,
    queue: Tensor,
    temperature: float = 0.2,
    targets: Tensor | None = None,
    *,
    validate_targets: bool = True,
) -> Tensor:
    """MoCo v2 InfoNCE against a queue of negatives; with `targets`, i-Mix on MoCo.

    query: (N, D) from the online encoder; key: (N, D), normally from the momentum encoder under
    no_grad (a key that requires grad does receive gradient); queue: (K, D) past keys.
    Without targets: `logits = [q . k_i | q @ queue.T] / T`, shape (N, 1 + K), class 0 positive.
    With targets ((N,) indices or (N, N) soft labels): `logits = q @ [key; queue].T / T`, shape
    (N, N + K), the targets padded with zeros over the K queue columns.
    validate_targets: check the targets' values (indices in range; soft rows non-negative,
        summing to 1), which reads one boolean back from the device, a host sync. False skips
        that check (type, dtype and shape are still checked): for targets that `imix_mixup` /
        `imix_cutmix` made, in a training step that must not wait on the device.

    Distributed: no communication; keys reach other ranks through `MemoryQueue.enqueue`, which
    gathers them. Mean over this rank's N anchors; DDP averages gradients over ranks.

    Returns a float32 scalar (float64 if an input is float64).
    """
    check_embeddings("query", query)
    check_embeddings("key", key)
    check_same_shape("query", query, "key", key)
    check_queue(queue, query.shape[1])
    check_same_device("query", query, "queue", queue)
    temperature = check_temperature("temperature", temperature)
    targets = check_targets(targets, query.shape[0], query.device, validate_targets)
    dtype = compute_dtype(query, key, queue)
    with autocast_disabled(query.device):
        anchors = l2_normalize(query, dtype) / temperature
        keys = l2_normalize(key, dtype)
        lse_queue = similarity_logsumexp(anchors, l2_normalize(queue, dtype))
        if targets is None:
            positive = (anchors * keys).sum(dim=1)
            return (torch.logaddexp(positive, lse_queue) - positive).mean()
        lse = torch.logaddexp(similarity_logsumexp(anchors, keys), lse_queue)
        target_logit, target_mass = _target_terms(anchors, keys, targets)
        return (target_mass * lse - target_logit).mean()


def isd_loss(
    student: Tensor,
    teacher: Tensor,
    queue: Tensor,
    student_temperature: float = 0.02,
    teacher_temperature: float = 0.02,
) -> Tensor:
    """ISD (Tejankar et al. 2021): `KL(p_teacher || p_student)` over the queue, batchmean.

    student: (N, D) from the student (after its predictor); teacher: (N, D) from the EMA teacher,
    detached here; queue: (K, D) anchor points. `p_teacher = softmax(teacher @ queue.T / T_t)`,
    `p_student = softmax(student @ queue.T / T_s)`, both over the K queue entries. ISD uses
    T_t = T_s = 0.02; ISD-plus uses T_t = 0.01, T_s = 0.1.

    Distributed: no communication (the queue is shared through `MemoryQueue.enqueue`); mean
    over this rank's N anchors; DDP averages gradients over ranks.

    Returns a float32 scalar (float64 if an input is float64).
    """
    check_embeddings("student", student)
    check_embeddings("teacher", teacher)
    check_same_shape("student", student, "teacher", teacher)
    check_queue(queue, student.shape[1])
    check_same_device("student", student, "queue", queue)
    student_temperature = check_temperature("student_temperature", student_temperature)
    teacher_temperature = check_temperature("teacher_temperature", teacher_temperature)
    dtype = compute_dtype(student, teacher, queue)
    with autocast_disabled(student.device):
        anchors_queue = l2_normalize(queue.detach(), dtype)
        with torch.no_grad():
            # Teacher: p = softmax(l), l = t @ queue.T. One (N, K) buffer, freed before the student's.
            t = l2_normalize(teacher, dtype) / teacher_temperature
            logits = t @ anchors_queue.T
            row_max = logits.amax(dim=1)
            exp_logits = logits.sub_(row_max.unsqueeze(1)).exp_()
            row_sum = exp_logits.sum(dim=1)
            # p @ queue: the teacher-weighted queue mean, (N, D).
            teacher_mean_key = (exp_logits @ anchors_queue) / row_sum.unsqueeze(1)
            del logits, exp_logits
            # sum_k p_k log p_k = sum_k p_k l_k - lse, and sum_k p_k l_k = t . (p @ queue).
            teacher_lse = row_max + row_sum.log()
            teacher_neg_entropy = (t * teacher_mean_key).sum(dim=1) - teacher_lse
        s = l2_normalize(student, dtype) / student_temperature
        student_lse = similarity_logsumexp(s, anchors_queue)
        # sum_k p_teacher_k log p_student_k = s . (p_teacher @ queue) - lse_student.
        cross = (s * teacher_mean_key).sum(dim=1) - student_lse
        return (teacher_neg_entropy - cross).mean()


def byol_loss(
    prediction: Tensor,
    target: Tensor,
    targets: Tensor | None = None,
    *,
    validate_targets: bool = True,
) -> Tensor:
    """BYOL regression loss `2 - 2 * sum_j targets_ij * cos(p_i, z_j)`, mean over the batch.

    prediction: (N, D) online predictor output p; target: (N, D) target-network projection z,
    detached here. targets: None (p_i against z_i), (N,) int64 indices, or (N, N) soft labels
    (i-Mix). One direction only: symmetrise in the caller by swapping the views.
    validate_targets: check the targets' values (indices in range; soft rows non-negative,
        summing to 1), which reads one boolean back from the device, a host sync. False skips
        that check (type, dtype and shape are still checked): for targets that `imix_mixup` /
        `imix_cutmix` made, in a training step that must not wait on the device.

    Distributed: no communication; per-sample loss, mean over this rank's N rows.

    Returns a float32 scalar (float64 if an input is float64).
    """
    check_embeddings("prediction", prediction)
    check_embeddings("target", target)
    check_same_shape("prediction", prediction, "target", target)
    targets = check_targets(targets, prediction.shape[0], prediction.device, validate_targets)
    dtype = compute_dtype(prediction, target)
    with autocast_disabled(prediction.device):
        p = l2_normalize(prediction, dtype)
        z = l2_normalize(target.detach(), dtype)
        cosine, _ = _target_terms(p, z, targets)
        return (2 - 2 * cosine).mean()
