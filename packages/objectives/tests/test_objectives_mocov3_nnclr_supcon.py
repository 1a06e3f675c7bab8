"""MoCo v3, NNCLR and SupCon: loop-by-hand references, gradcheck, half precision, modules and bad input.

The references below walk over anchors and candidates with Python loops and scalar tensor ops; they
share no code with the package (not even the normalisation), so they can disagree with it.
"""

from __future__ import annotations

import math

import objectives_reference as ref
import pytest
import torch
import torch.nn.functional as F
from objectives_testing import (
    assert_autocast_keeps_float32,
    assert_same_value_and_grad,
    float64_inputs,
    make_targets,
    saturated_pairs,
)

from contrastkit.objectives import MemoryQueue, nt_xent_loss
from contrastkit.objectives.mocov3 import MoCoV3Loss, mocov3_loss
from contrastkit.objectives.nnclr import NNCLRLoss, nearest_neighbours, nnclr_loss
from contrastkit.objectives.supcon import SupConLoss, supcon_loss

N, D, K = 6, 5, 9
COLD = 0.01  # temperature: cosine similarities of +-1 become logits of +-100


# ----------------------------------------------------------------------------- references


def ref_mocov3_direction(query, key, temperature, targets) -> torch.Tensor:
    """moco-v3 ctr_loss by hand: 2T * mean_i sum_j t_ij (lse_i - q_i.k_j / T), keys detached."""
    n = query.shape[0]
    soft = ref.as_soft(targets, n)
    total = 0.0
    for i in range(n):
        logits = [ref.cosine(query[i], key[j].detach()) / temperature for j in range(n)]
        lse = ref.log_sum_exp(logits)
        for j in range(n):
            if soft[i][j]:
                total = total + soft[i][j] * (lse - logits[j])
    return 2 * temperature * total / n


def ref_mocov3(q1, q2, k1, k2, temperature, targets1=None, targets2=None) -> torch.Tensor:
    return ref_mocov3_direction(q1, k2, temperature, targets1) + ref_mocov3_direction(
        q2, k1, temperature, targets2
    )


def ref_nearest_index(z_row: torch.Tensor, support: torch.Tensor) -> int:
    best, best_index = -math.inf, -1
    for m in range(support.shape[0]):
        similarity = float(ref.cosine(z_row.detach(), support[m]))
        if similarity > best:  # strict: the first of equal candidates wins
            best, best_index = similarity, m
    return best_index


def ref_nnclr(z1, z2, p1, p2, support, temperature) -> torch.Tensor:
    def direction(z, p):
        n = z.shape[0]
        total = 0.0
        for i in range(n):
            neighbour = support[ref_nearest_index(z[i], support)]
            logits = [ref.cosine(neighbour, p[j]) / temperature for j in range(n)]
            total = total + ref.log_sum_exp(logits) - logits[i]
        return total / n

    return (direction(z1, p2) + direction(z2, p1)) / 2


def ref_supcon(views, labels, temperature, base_temperature) -> torch.Tensor:
    """SupContrast's L_out by hand over all V*N embeddings; an anchor without positives gives 0."""
    n = views[0].shape[0]
    embeddings, classes = [], []
    for view in views:
        for i in range(n):
            embeddings.append(view[i])
            classes.append(i if labels is None else int(labels[i]))
    total = 0.0
    for a in range(len(embeddings)):
        others = [k for k in range(len(embeddings)) if k != a]
        logit = {k: ref.cosine(embeddings[a], embeddings[k]) / temperature for k in others}
        lse = ref.log_sum_exp([logit[k] for k in others])
        positives = [k for k in others if classes[k] == classes[a]]
        if positives:
            mean_log_prob = sum(logit[p] - lse for p in positives) / len(positives)
            total = total - (temperature / base_temperature) * mean_log_prob
    return total / len(embeddings)


# ----------------------------------------------------------------------------- MoCo v3


@pytest.mark.parametrize("temperature", [0.2, 1.0])
@pytest.mark.parametrize("kind", ["none", "index", "soft"])
def test_mocov3_matches_loop_reference(temperature, kind):
    q1, q2, k1, k2 = float64_inputs(0, (N, D), (N, D), (N, D), (N, D))
    t1, t2 = make_targets(kind, 1, N), make_targets(kind, 2, N)
    ours = mocov3_loss(q1, q2, k1, k2, temperature, targets1=t1, targets2=t2)
    assert_same_value_and_grad(ours, ref_mocov3(q1, q2, k1, k2, temperature, t1, t2), [q1, q2])
    assert ours.dtype == torch.float64 and ours.ndim == 0
    # The keys are targets: no gradient reaches them (moco-v3 computes them under no_grad).
    assert torch.autograd.grad(ours, [k1, k2], allow_unused=True) == (None, None)


def test_mocov3_equals_the_original_cross_entropy_times_two_temperatures():
    # moco-v3 builder.py: CE(einsum(q, k) / T, arange(N)) * (2 * T), summed over the two directions.
    q1, q2, k1, k2 = (t.detach() for t in float64_inputs(3, (N, D), (N, D), (N, D), (N, D)))
    temperature = 0.2
    labels = torch.arange(N)

    def ctr(q, k):
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / temperature
        return F.cross_entropy(logits, labels) * (2 * temperature)

    expected = ctr(q1, k2) + ctr(q2, k1)
    torch.testing.assert_close(mocov3_loss(q1, q2, k1, k2, temperature), expected)


def test_mocov3_gradcheck():
    q1, q2, k1, k2 = float64_inputs(4, (4, 3), (4, 3), (4, 3), (4, 3))
    soft = make_targets("soft", 5, 4)
    assert torch.autograd.gradcheck(
        lambda a, b: mocov3_loss(a, b, k1.detach(), k2.detach(), 0.3, targets1=soft), (q1, q2)
    )


def test_mocov3_module_matches_function():
    q1, q2, k1, k2 = float64_inputs(6, (N, D), (N, D), (N, D), (N, D))
    module = MoCoV3Loss(temperature=0.5)
    assert "temperature=0.5" in repr(module)
    torch.testing.assert_close(module(q1, q2, k1, k2), mocov3_loss(q1, q2, k1, k2, 0.5))


# ----------------------------------------------------------------------------- NNCLR


def test_nearest_neighbours_match_brute_force():
    generator = torch.Generator().manual_seed(7)
    z = torch.randn(N, D, generator=generator)
    support = torch.randn(K, D, generator=generator) * torch.rand(K, 1, generator=generator)
    values, indices = nearest_neighbours(z, support)
    expected = [ref_nearest_index(z[i], support) for i in range(N)]
    assert indices.tolist() == expected
    torch.testing.assert_close(values, support[expected], rtol=0, atol=0)  # rows as stored
    assert indices.dtype == torch.long and not values.requires_grad


def test_nearest_neighbours_ignore_norms_and_prefer_the_first_tie():
    support = torch.tensor([[0.0, 1.0], [10.0, 0.0], [1.0, 0.0], [0.0, -3.0]])
    z = torch.tensor([[2.0, 0.1], [0.0, -0.5], [1.0, 1.0]])
    # [1, 1] is as close to [0, 1] as to [10, 0] and [1, 0]: the lowest index wins.
    assert nearest_neighbours(z, support).indices.tolist() == [1, 3, 0]


def test_nearest_neighbours_under_autocast_use_float32():
    generator = torch.Generator().manual_seed(8)
    z = torch.randn(64, 32, generator=generator)
    support = torch.randn(256, 32, generator=generator)
    expected = nearest_neighbours(z, support).indices
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = nearest_neighbours(z, support).indices
    assert torch.equal(got, expected)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nnclr_matches_loop_reference(temperature):
    z1, z2, p1, p2 = float64_inputs(9, (N, D), (N, D), (N, D), (N, D))
    support = float64_inputs(10, (K, D))[0].detach()
    ours = nnclr_loss(z1, z2, p1, p2, support, temperature)
    assert_same_value_and_grad(ours, ref_nnclr(z1, z2, p1, p2, support, temperature), [p1, p2])
    assert ours.dtype == torch.float64
    # The projections only choose neighbours: no gradient reaches them.
    assert torch.autograd.grad(ours, [z1, z2], allow_unused=True) == (None, None)


def test_nnclr_with_the_views_as_their_own_neighbours_is_in_batch_infonce():
    # With support = [z1; z2], NN(z) is z itself, so each direction is N-pair InfoNCE of z1 vs z2.
    z1, z2 = (t.detach() for t in float64_inputs(11, (N, D), (N, D)))
    support = torch.cat([z1, z2])
    temperature = 0.3
    logits12 = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T / temperature
    expected = (
        F.cross_entropy(logits12, torch.arange(N)) + F.cross_entropy(logits12.T, torch.arange(N))
    ) / 2
    torch.testing.assert_close(nnclr_loss(z1, z2, z1, z2, support, temperature), expected)


def test_nnclr_gradcheck():
    z1, z2, p1, p2 = float64_inputs(12, (4, 3), (4, 3), (4, 3), (4, 3))
    support = float64_inputs(13, (7, 3))[0].detach()
    assert torch.autograd.gradcheck(
        lambda a, b: nnclr_loss(z1.detach(), z2.detach(), a, b, support, 0.2), (p1, p2)
    )


def test_nnclr_module_uses_then_updates_its_support_set():
    z1, z2, p1, p2 = (t.detach() for t in float64_inputs(14, (N, D), (N, D), (N, D), (N, D)))
    module = NNCLRLoss(support_size=8, dim=D, temperature=0.2, seed=3)
    before = module.support.keys.clone()
    loss = module(z1.float(), z2.float(), p1.float(), p2.float())
    torch.testing.assert_close(loss, nnclr_loss(z1, z2, p1, p2, before.double(), 0.2).float())
    # z1 was enqueued (normalised, FIFO from row 0), as solo-learn's dequeue_and_enqueue(z1).
    expected = MemoryQueue(8, D, seed=3)
    expected.enqueue(z1.float())
    torch.testing.assert_close(module.support.keys, expected.keys)
    assert module.support.ptr.item() == N
    assert set(module.state_dict()) == {"support.keys", "support.ptr"}
    # update=False leaves the support set alone; a restored copy computes the same loss.
    restored = NNCLRLoss(support_size=8, dim=D, temperature=0.2, seed=99)
    restored.load_state_dict(module.state_dict())
    frozen = module.support.keys.clone()
    again = module(z1.float(), z2.float(), p1.float(), p2.float(), update=False)
    assert torch.equal(module.support.keys, frozen)
    torch.testing.assert_close(
        restored(z1.float(), z2.float(), p1.float(), p2.float(), update=False), again
    )
    assert "temperature=0.2" in repr(module) and "size=8" in repr(module)


# ----------------------------------------------------------------------------- SupCon


LABELS = torch.tensor([0, 1, 0, 2, 1, 3])  # class 2 and class 3 appear once


@pytest.mark.parametrize("views", [1, 2, 3])
@pytest.mark.parametrize("temperature,base", [(0.1, 0.07), (0.5, 0.5)])
def test_supcon_matches_loop_reference(views, temperature, base):
    features = float64_inputs(15, (N, views, D))[0]
    ours = supcon_loss(features, LABELS, temperature, base)
    reference = ref_supcon(list(features.unbind(1)), LABELS, temperature, base)
    assert_same_value_and_grad(ours, reference, [features])
    assert ours.dtype == torch.float64 and ours.ndim == 0


@pytest.mark.parametrize("views", [2, 3])
def test_supcon_without_labels_matches_loop_reference(views):
    features = float64_inputs(16, *[(N, D)] * views)
    ours = supcon_loss(features, None, 0.2, 0.07)
    assert_same_value_and_grad(ours, ref_supcon(features, None, 0.2, 0.07), features)


def test_supcon_list_and_stacked_features_agree_and_labels_are_any_integers():
    z1, z2 = float64_inputs(17, (N, D), (N, D))
    stacked = torch.stack([z1, z2], dim=1)
    relabelled = LABELS * 7 - 100  # only equality matters, not the values
    torch.testing.assert_close(
        supcon_loss((z1, z2), relabelled.to(torch.int32)), supcon_loss(stacked, LABELS)
    )


def test_supcon_without_labels_is_nt_xent_for_two_views():
    z1, z2 = float64_inputs(18, (N, D), (N, D))
    for temperature in (0.5, 0.07):
        got = supcon_loss([z1, z2], None, temperature, base_temperature=temperature)
        torch.testing.assert_close(got, nt_xent_loss(z1, z2, temperature), rtol=1e-12, atol=1e-12)
    # The T / T_base factor scales it.
    scaled = supcon_loss([z1, z2], None, 0.1, base_temperature=0.07)
    torch.testing.assert_close(scaled, nt_xent_loss(z1, z2, 0.1) * (0.1 / 0.07))


def test_supcon_single_view_anchor_without_positive_contributes_zero():
    features = float64_inputs(19, (4, 1, D))[0]
    all_alone = supcon_loss(features, torch.tensor([0, 1, 2, 3]))
    assert all_alone.item() == 0.0
    (grad,) = torch.autograd.grad(all_alone, features)
    assert torch.isfinite(grad).all() and torch.count_nonzero(grad) == 0


def test_supcon_gradcheck():
    features = float64_inputs(20, (4, 2, 3))[0]
    labels = torch.tensor([0, 1, 0, 2])
    assert torch.autograd.gradcheck(lambda f: supcon_loss(f, labels, 0.3, 0.2), (features,))


def test_supcon_module_matches_function():
    features = float64_inputs(21, (N, 2, D))[0]
    module = SupConLoss()
    assert "temperature=0.1, base_temperature=0.07" in repr(module)
    torch.testing.assert_close(module(features, LABELS), supcon_loss(features, LABELS, 0.1, 0.07))


# ----------------------------------------------------------------------------- numerics


def _all_losses(a: torch.Tensor, b: torch.Tensor, support: torch.Tensor) -> dict:
    labels = torch.arange(a.shape[0]) % 3
    soft = torch.full((a.shape[0], a.shape[0]), 1.0 / a.shape[0])
    return {
        "mocov3": mocov3_loss(a, b, b, a, COLD),
        "mocov3_soft": mocov3_loss(a, b, b, a, COLD, targets1=soft),
        "nnclr": nnclr_loss(a, b, a, b, support, COLD),
        "supcon": supcon_loss([a, b], labels, COLD, 0.07),
        "supcon_none": supcon_loss([a, b], None, COLD, COLD),
    }


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", list(saturated_pairs(22)))
def test_half_inputs_at_cold_temperature_match_float32(half, case):
    a, b = saturated_pairs(22)[case]
    support = torch.cat(
        [a[:3], -b[:3], torch.randn(10, 16, generator=torch.Generator().manual_seed(23))]
    )
    low = _all_losses(a.to(half), b.to(half), support.to(half))
    full = _all_losses(a.to(half).float(), b.to(half).float(), support.to(half).float())
    for name, value in low.items():
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value), (name, value)
        torch.testing.assert_close(value, full[name], rtol=0, atol=1e-3, msg=name)


def test_saturated_losses_have_closed_form_values():
    a, _ = saturated_pairs(22)["identical"]
    a = a.to(torch.bfloat16)
    n = a.shape[0]
    # Every logit equals 1/T: each ctr direction is 2T log N, SupCon's anchors (T/T_b) log(2N - 1).
    assert math.isclose(mocov3_loss(a, a, a, a, COLD).item(), 4 * COLD * math.log(n), rel_tol=1e-5)
    got = supcon_loss([a, a], None, COLD, 0.07).item()
    assert math.isclose(got, COLD / 0.07 * math.log(2 * n - 1), rel_tol=1e-5)
    assert math.isclose(nnclr_loss(a, a, a, a, a.float(), COLD).item(), math.log(n), rel_tol=1e-5)


def test_half_gradients_are_finite_at_cold_temperature():
    for half in (torch.float16, torch.bfloat16):
        for a, b in saturated_pairs(22).values():
            a = a.to(half).requires_grad_()
            b = b.to(half).requires_grad_()
            support = torch.cat([a.detach(), -b.detach()]).float()
            loss = sum(_all_losses(a, b, support).values())
            grads = torch.autograd.grad(loss, [a, b])
            for grad in grads:
                assert grad.dtype == half and torch.isfinite(grad).all()


def test_autocast_does_not_lower_the_loss_precision():
    assert_autocast_keeps_float32(_all_losses, seed=24)


def test_zero_embedding_gives_finite_loss_and_gradient():
    generator = torch.Generator().manual_seed(25)
    a = torch.randn(8, 16, generator=generator)
    a[0] = 0
    a.requires_grad_()
    b = torch.randn(8, 16, generator=generator)
    support = torch.randn(32, 16, generator=generator)
    support[0] = 0
    for name, loss in _all_losses(a, b, support).items():
        assert torch.isfinite(loss), name
        (grad,) = torch.autograd.grad(loss, a)
        assert torch.isfinite(grad).all(), name


# ----------------------------------------------------------------------------- bad input

A, B = torch.randn(4, 3), torch.randn(4, 3)
S = torch.randn(10, 3)
F3 = torch.randn(4, 2, 3)
Y = torch.tensor([0, 1, 0, 1])

CASES = {
    "q1 not a tensor": (lambda: mocov3_loss([[1.0]], B, A, B), r"q1 must be a torch\.Tensor"),
    "k2 shape": (
        lambda: mocov3_loss(A, B, A, B[:, :2]),
        r"q1 and k2 must have the same shape.*\(4, 3\) and \(4, 2\)",
    ),
    "q2 integer": (lambda: mocov3_loss(A, B.long(), A, B), r"q2 must have a floating dtype"),
    "mocov3 temperature": (
        lambda: mocov3_loss(A, B, A, B, temperature=0.0),
        r"temperature must be a finite number > 0, got 0\.0",
    ),
    "targets1 range": (
        lambda: mocov3_loss(A, B, A, B, targets1=torch.tensor([0, 1, 2, 4])),
        r"targets1: index targets must lie in \[0, 4\)",
    ),
    "targets2 shape": (
        lambda: mocov3_loss(A, B, A, B, targets2=torch.ones(4, 3) / 3),
        r"targets2: soft targets must have shape \(N, N\) = \(4, 4\)",
    ),
    "MoCoV3Loss temperature": (lambda: MoCoV3Loss(-1), r"temperature must be a finite number > 0"),
    "z 1-d": (lambda: nearest_neighbours(A[0], S), r"z must have shape \(N, D\)"),
    "support dim": (
        lambda: nearest_neighbours(A, S[:, :2]),
        r"support dim must equal the embedding dim 3, got support shape \(10, 2\)",
    ),
    "support not a tensor": (
        lambda: nnclr_loss(A, B, A, B, "queue"),
        r"support must be a torch\.Tensor, got str",
    ),
    "support empty": (
        lambda: nnclr_loss(A, B, A, B, S[:0]),
        r"support must be non-empty, got shape \(0, 3\)",
    ),
    "p2 shape": (
        lambda: nnclr_loss(A, B, A, B[:3], S),
        r"p1 and p2 must have the same shape.*\(4, 3\) and \(3, 3\)",
    ),
    "z2 vs z1": (
        lambda: nnclr_loss(A, B[:, :2], A, B, S),
        r"z1 and z2 must have the same shape",
    ),
    "support device": (
        lambda: nnclr_loss(A, B, A, B, S.to("meta")),
        r"z1 and support must be on the same device",
    ),
    "nnclr temperature": (
        lambda: nnclr_loss(A, B, A, B, S, temperature=float("nan")),
        r"temperature must be a finite number > 0, got nan",
    ),
    "NNCLRLoss size": (lambda: NNCLRLoss(0, 3), r"support_size must be an int >= 1, got 0"),
    "NNCLRLoss dim": (lambda: NNCLRLoss(8, 2.5), r"dim must be an int >= 1, got 2\.5"),
    "NNCLRLoss temperature": (lambda: NNCLRLoss(8, 3, temperature=0), r"temperature must be"),
    "features 2-d": (lambda: supcon_loss(A, Y), r"features must have shape \(N, V, D\)"),
    "features empty list": (
        lambda: supcon_loss([], Y),
        r"features must be a \(N, V, D\) tensor or a non-empty list.*got list of length 0",
    ),
    "features not tensors": (
        lambda: supcon_loss("abc", Y),
        r"features must be a \(N, V, D\) tensor or a non-empty list.*got str",
    ),
    "features integer": (lambda: supcon_loss(F3.long(), Y), r"features must have a floating dtype"),
    "features empty": (lambda: supcon_loss(F3[:0], Y[:0]), r"features must be non-empty"),
    "features views differ": (
        lambda: supcon_loss([A, B[:3]], Y),
        r"features\[0\] and features\[1\] must have the same shape",
    ),
    "features[1] 3-d": (lambda: supcon_loss([A, F3], Y), r"features\[1\] must have shape \(N, D\)"),
    "labels float": (
        lambda: supcon_loss(F3, Y.float()),
        r"labels must be an integer tensor \(class ids\), got dtype torch\.float32",
    ),
    "labels bool": (lambda: supcon_loss(F3, Y.bool()), r"labels must be an integer tensor"),
    "labels shape": (
        lambda: supcon_loss(F3, Y[:3]),
        r"labels must have shape \(N,\) = \(4,\), got \(3,\)",
    ),
    "labels list": (
        lambda: supcon_loss(F3, [0, 1, 0, 1]),
        r"labels must be None or a torch\.Tensor",
    ),
    "one view without labels": (
        lambda: supcon_loss(F3[:, :1]),
        r"features must hold at least 2 views when labels is None.*got 1 view",
    ),
    "base_temperature": (
        lambda: supcon_loss(F3, Y, base_temperature=-0.07),
        r"base_temperature must be a finite number > 0, got -0\.07",
    ),
    "SupConLoss temperature": (
        lambda: SupConLoss(temperature="0.1"),
        r"temperature must be a number",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_value_error_naming_the_argument(case):
    call, message = CASES[case]
    with pytest.raises(ValueError, match=message):
        call()
