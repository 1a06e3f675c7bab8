"""DINO and SwAV against loop-by-hand versions of facebookresearch/dino and facebookresearch/swav.

The references below walk over crops, rows and prototypes with Python loops and scalar ops (the
Sinkhorn one is the original's multiplicative algorithm on Python floats), independently of the
package's vectorised, log-domain code. Values, gradients, gradcheck, half precision, state and
bad arguments.
"""

from __future__ import annotations

import math

import objectives_reference as ref
import pytest
import torch
from objectives_testing import assert_same_value_and_grad

from contrastkit.objectives.dino import DINOLoss, dino_loss, dino_teacher_temperature
from contrastkit.objectives.swav import (
    SwAVLoss,
    SwAVQueue,
    normalize_prototypes,
    sinkhorn_knopp,
    swav_loss,
)

N, K = 3, 5


def _crops(seed: int, count: int, n: int = N, k: int = K, scale: float = 1.0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (scale * torch.randn(n, k, generator=generator, dtype=torch.float64)).requires_grad_()
        for _ in range(count)
    ]


# ---------------------------------------------------------------- loop-by-hand references


def _cross_entropy(target: list[torch.Tensor], logits: list[torch.Tensor]) -> torch.Tensor:
    lse = ref.log_sum_exp(logits)
    return -sum(q * (z - lse) for q, z in zip(target, logits))


def ref_dino(student, teacher, center, student_temperature, teacher_temperature):
    """main_dino.py DINOLoss.forward: every (teacher crop iq, student crop v != iq), mean over rows."""
    total, terms = 0.0, 0
    for iq, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == iq:
                continue
            pair = 0.0
            for n in range(s.shape[0]):
                teacher_logits = [
                    (t[n, k].detach() - center[0, k]) / teacher_temperature
                    for k in range(t.shape[1])
                ]
                lse = ref.log_sum_exp(teacher_logits)
                q = [torch.exp(z - lse) for z in teacher_logits]
                pair = pair + _cross_entropy(
                    q, [s[n, k] / student_temperature for k in range(s.shape[1])]
                )
            total = total + pair / s.shape[0]
            terms += 1
    return total / terms


def ref_sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """main_swav.py distributed_sinkhorn on one process, on Python floats (double precision)."""
    rows = scores.detach().double().tolist()
    b, k = len(rows), len(rows[0])
    q = [[math.exp(rows[i][j] / epsilon) for i in range(b)] for j in range(k)]  # K x B
    total = sum(sum(row) for row in q)
    q = [[x / total for x in row] for row in q]
    for _ in range(iterations):
        for j in range(k):
            row_sum = sum(q[j])
            q[j] = [x / row_sum / k for x in q[j]]
        for i in range(b):
            column_sum = sum(q[j][i] for j in range(k))
            for j in range(k):
                q[j][i] = q[j][i] / column_sum / b
    return torch.tensor([[q[j][i] * b for j in range(k)] for i in range(b)], dtype=torch.float64)


def ref_swav(scores, codes, temperature, crops_for_assign):
    """main_swav.py train(): subloss over v != crop_id, / (S - 1), summed, / len(crops_for_assign)."""
    loss = 0.0
    for i, crop_id in enumerate(crops_for_assign):
        subloss = 0.0
        for v in range(len(scores)):
            if v == crop_id:
                continue
            rows = 0.0
            for n in range(scores[v].shape[0]):
                rows = rows + _cross_entropy(
                    [codes[i][n, j] for j in range(codes[i].shape[1])],
                    [scores[v][n, j] / temperature for j in range(scores[v].shape[1])],
                )
            subloss = subloss + rows / scores[v].shape[0]
        loss = loss + subloss / (len(scores) - 1)
    return loss / len(crops_for_assign)


# ---------------------------------------------------------------- DINO


@pytest.mark.parametrize(("crops", "teachers"), [(2, 2), (4, 2), (3, 1), (5, 3)])
def test_dino_loss_matches_reference(crops, teachers):
    student = _crops(0, crops, scale=2.0)
    teacher = _crops(1, teachers, scale=2.0)
    center = torch.randn(1, K, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours = dino_loss(student, teacher, center, 0.1, 0.04)
    theirs = ref_dino(student, teacher, center, 0.1, 0.04)
    assert_same_value_and_grad(ours, theirs, student)


def test_dino_loss_sends_no_gradient_to_the_teacher_and_takes_a_1d_center():
    student, teacher = _crops(3, 4), _crops(4, 2)
    center = torch.randn(K, dtype=torch.float64)
    dino_loss(student, teacher, center).backward()
    assert all(t.grad is None for t in teacher)
    assert all(s.grad is not None for s in student)
    torch.testing.assert_close(
        dino_loss(student, teacher, center), dino_loss(student, teacher, center[None])
    )


def test_dino_loss_gradcheck():
    student, teacher = _crops(5, 3, n=2, k=3), _crops(6, 2, n=2, k=3)
    center = torch.randn(1, 3, dtype=torch.float64)

    def loss(*s):
        return dino_loss(list(s), teacher, center, 0.3, 0.2)

    assert torch.autograd.gradcheck(loss, tuple(student))


def test_dino_teacher_temperature_is_the_originals_linspace_then_constant():
    # np.linspace(0.04, 0.07, 4) == [0.04, 0.05, 0.06, 0.07]; then teacher_temp.
    expected = [0.04, 0.05, 0.06, 0.07, 0.07, 0.07]
    got = [dino_teacher_temperature(e, 0.04, 0.07, 4) for e in range(6)]
    assert all(math.isclose(g, e, rel_tol=1e-12) for g, e in zip(got, expected)), got
    assert got[3] == 0.07  # linspace's endpoint is exact
    # One warm-up epoch: linspace(a, b, 1) == [a].
    assert [dino_teacher_temperature(e, 0.04, 0.07, 1) for e in range(3)] == [0.04, 0.07, 0.07]
    # No warm-up (facebookresearch/dino's default): constant.
    assert [dino_teacher_temperature(e, 0.04, 0.07, 0) for e in range(3)] == [0.07] * 3
    assert dino_teacher_temperature(0) == 0.04  # defaults 0.04 -> 0.04
    # 30 warm-up epochs from 0.04 to 0.07, against torch.linspace in float64.
    line = torch.linspace(0.04, 0.07, 30, dtype=torch.float64).tolist()
    for epoch, value in enumerate(line):
        assert math.isclose(dino_teacher_temperature(epoch, 0.04, 0.07, 30), value, rel_tol=1e-12)


def test_dino_loss_module_updates_its_center_after_the_loss_and_saves_it():
    student, teacher = _crops(7, 4), _crops(8, 2)
    module = DINOLoss(K, 0.04, 0.07, warmup_epochs=3).double()
    assert module.center.dtype == torch.float64
    assert torch.equal(module.center, torch.zeros(1, K, dtype=torch.float64))

    loss = module(student, teacher, epoch=1)
    # The loss used the old (zero) centre and epoch 1's temperature 0.055.
    torch.testing.assert_close(loss, ref_dino(student, teacher, torch.zeros(1, K), 0.1, 0.055))
    rows = [t[n] for t in teacher for n in range(N)]
    batch_mean = (sum(rows) / len(rows)).detach()
    torch.testing.assert_close(module.center, 0.1 * batch_mean[None])

    module(student, teacher, epoch=5)
    torch.testing.assert_close(module.center, (0.9 * 0.1 + 0.1) * batch_mean[None])
    assert set(module.state_dict()) == {"center"}

    fresh = DINOLoss(K).double()
    fresh.load_state_dict(module.state_dict())
    torch.testing.assert_close(fresh.center, module.center)

    fresh.eval()
    before = fresh.center.clone()
    fresh(student, teacher, epoch=5)
    assert torch.equal(fresh.center, before)  # eval mode leaves the state alone


# ---------------------------------------------------------------- Sinkhorn


@pytest.mark.parametrize(
    ("n", "k", "epsilon", "iterations"), [(4, 3, 0.05, 3), (6, 10, 0.1, 1), (5, 5, 0.5, 7)]
)
def test_sinkhorn_matches_the_original_iterations(n, k, epsilon, iterations):
    generator = torch.Generator().manual_seed(n * k)
    scores = torch.nn.functional.normalize(torch.randn(n, k, generator=generator), dim=1)
    codes = sinkhorn_knopp(scores.double(), epsilon, iterations)
    torch.testing.assert_close(codes, ref_sinkhorn(scores, epsilon, iterations))
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(n, dtype=torch.float64))
    # float32 input: float32 codes, same values.
    torch.testing.assert_close(
        sinkhorn_knopp(scores, epsilon, iterations), codes.float(), rtol=1e-5, atol=1e-6
    )


def test_sinkhorn_converges_to_an_equipartition_and_records_no_gradient():
    generator = torch.Generator().manual_seed(11)
    scores = torch.randn(12, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    codes = sinkhorn_knopp(scores, 0.5, 200)
    assert not codes.requires_grad
    torch.testing.assert_close(codes.sum(dim=0), torch.full((4,), 3.0, dtype=torch.float64))


def test_sinkhorn_stays_finite_where_the_original_overflows_float32():
    # Cosine scores of +-1 at epsilon 0.01: exp(100) overflows float32 in the original.
    generator = torch.Generator().manual_seed(12)
    scores = torch.sign(torch.randn(6, 4, generator=generator))
    assert not torch.isfinite(torch.exp(scores / 0.01)).all()
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        codes = sinkhorn_knopp(scores.to(dtype), 0.01, 3)
        assert codes.dtype == torch.float32
        assert torch.isfinite(codes).all()
        torch.testing.assert_close(codes.double(), ref_sinkhorn(scores, 0.01, 3), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- SwAV loss


@pytest.mark.parametrize(("crops", "assign"), [(2, None), (4, None), (4, [1, 3]), (3, [2])])
def test_swav_loss_matches_reference(crops, assign):
    scores = _crops(20, crops)
    assigned = assign if assign is not None else [0, 1]
    codes = [sinkhorn_knopp(scores[c]) for c in assigned]
    ours = swav_loss(scores, codes, 0.1, assign)
    theirs = ref_swav(scores, codes, 0.1, assigned)
    assert_same_value_and_grad(ours, theirs, scores)


def test_swav_loss_gradcheck_and_codes_get_no_gradient():
    scores = _crops(21, 3, n=2, k=3)
    codes = [torch.rand(2, 3, dtype=torch.float64, requires_grad=True) for _ in range(2)]

    def loss(*s):
        return swav_loss(list(s), codes, 0.3)

    assert torch.autograd.gradcheck(loss, tuple(scores))
    swav_loss(scores, codes).backward()
    assert all(c.grad is None for c in codes)


def test_swav_module_with_a_queue_is_the_original_training_step():
    """main_swav.py: codes from sinkhorn(cat(queue @ prototypes.T, out))[-bs:], then the loss."""
    generator = torch.Generator().manual_seed(22)
    d, length = 4, 6
    prototypes = torch.randn(K, d, generator=generator, dtype=torch.float64)
    normalize_prototypes(prototypes)
    z = [torch.randn(N, d, generator=generator, dtype=torch.float64) for _ in range(3)]
    z = [torch.nn.functional.normalize(v, dim=1).requires_grad_() for v in z]
    scores = [v @ prototypes.T for v in z]
    queue = SwAVQueue(length, d).double()
    history = [torch.randn(2, N, d, generator=generator, dtype=torch.float64) for _ in range(3)]
    for step, batch in enumerate(history):
        # Not used before it is full (length // N = 2 pushes): the original waits too.
        assert (queue.scores(prototypes) is None) == (step < 2)
        queue.push(list(batch))
        assert queue.is_full == (step >= 1)
    queue_scores = queue.scores(prototypes)
    assert queue_scores is not None and queue_scores[0].shape == (length, K)

    ours = SwAVLoss(0.1, 0.05, 3)(scores, queue_scores)
    codes = []
    for i, crop_id in enumerate([0, 1]):
        # The original's queue holds the last length // N batches, newest first.
        kept = torch.cat([history[2][i], history[1][i]])
        out = torch.cat([kept @ prototypes.T, scores[crop_id].detach()])
        codes.append(ref_sinkhorn(out, 0.05, 3)[-N:])
    theirs = ref_swav(scores, codes, 0.1, [0, 1])
    assert_same_value_and_grad(ours, theirs, z)
    # Without a queue: Sinkhorn over the batch alone.
    plain = SwAVLoss()(scores)
    expected = swav_loss(scores, [sinkhorn_knopp(s.detach()) for s in scores[:2]])
    torch.testing.assert_close(plain, expected)


def test_swav_queue_wraps_keeps_the_newest_rows_and_saves_its_state():
    queue = SwAVQueue(length=5, dim=2, crops=1)
    rows = torch.arange(16, dtype=torch.float32).reshape(8, 2)
    queue.push([rows[:3]])
    queue.push([rows[3:7]])  # wraps around the end
    assert queue.is_full and queue.count.item() == 7
    kept = sorted(map(tuple, queue.embeddings[0].tolist()))
    assert kept == sorted(map(tuple, rows[2:7].tolist()))
    queue.push([torch.cat([rows, rows])])  # more than `length` at once: the newest 5
    assert sorted(map(tuple, queue.embeddings[0].tolist())) == sorted(map(tuple, rows[3:].tolist()))
    assert set(queue.state_dict()) == {"embeddings", "count"}
    restored = SwAVQueue(length=5, dim=2, crops=1)
    restored.load_state_dict(queue.state_dict())
    assert restored.is_full and torch.equal(restored.embeddings, queue.embeddings)


def test_normalize_prototypes_in_place_without_autograd_history():
    layer = torch.nn.Linear(3, 4, bias=False)
    with torch.no_grad():
        layer.weight[1] = 0
    storage = layer.weight.data_ptr()
    out = normalize_prototypes(layer.weight)
    assert out is layer.weight and layer.weight.data_ptr() == storage
    assert layer.weight.grad_fn is None and layer.weight.requires_grad
    norms = layer.weight.norm(dim=1)
    torch.testing.assert_close(norms[[0, 2, 3]], torch.ones(3))
    assert norms[1] == 0  # a zero row stays zero, not NaN
    half = torch.randn(4, 3, dtype=torch.bfloat16)
    normalize_prototypes(half)
    torch.testing.assert_close(half.float().norm(dim=1), torch.ones(4), atol=1e-2, rtol=0)


# ---------------------------------------------------------------- half precision


def _saturated(seed: int, count: int, scale: float) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # Clamped inside float16's range (max 65504), so the half tensors hold finite values.
    return [
        (scale * torch.randn(8, 16, generator=generator)).clamp(-6e4, 6e4) for _ in range(count)
    ]


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [1.0, 1e3, 6e4])
def test_half_inputs_at_cold_temperatures_match_float32(half, scale):
    # 6e4 is near float16's maximum: divided by 0.01 it overflows any half-precision softmax.
    student, teacher = _saturated(30, 4, scale), _saturated(31, 2, scale)
    center = _saturated(32, 1, scale)[0][:1]
    lows = [x.to(half) for x in student], [x.to(half) for x in teacher], center.to(half)
    fulls = [x.float() for x in lows[0]], [x.float() for x in lows[1]], lows[2].float()
    cases = {
        "dino": (lambda s, t, c: dino_loss(s, t, c, 0.1, 0.01)),
        "swav": (lambda s, t, c: SwAVLoss(0.01, 0.01)(s)),
        "swav_codes": (lambda s, t, c: sinkhorn_knopp(s[0], 0.01).sum(dim=0)),
    }
    for name, loss in cases.items():
        low, full = loss(*lows), loss(*fulls)
        assert low.dtype == torch.float32, name
        assert torch.isfinite(low).all(), (name, low)
        torch.testing.assert_close(low, full, rtol=1e-5, atol=1e-4, msg=name)


def test_half_gradients_are_finite_and_autocast_does_not_lower_precision():
    student = [x.to(torch.float16).requires_grad_() for x in _saturated(33, 3, 6e4)]
    teacher = [x.to(torch.float16) for x in _saturated(34, 2, 6e4)]
    (
        dino_loss(student, teacher, torch.zeros(1, 16), 0.1, 0.01) + SwAVLoss(0.01)(student)
    ).backward()
    assert all(s.grad.dtype == torch.float16 and torch.isfinite(s.grad).all() for s in student)

    generator = torch.Generator().manual_seed(35)
    layer = torch.nn.Linear(16, 16)
    x = [torch.randn(8, 16, generator=generator) for _ in range(4)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = [layer(v) for v in x]
        assert out[0].dtype == torch.bfloat16
        inside = [dino_loss(out, out[:2], torch.zeros(1, 16)), SwAVLoss()(out)]
    outside = [dino_loss([o.float() for o in out], [o.float() for o in out[:2]], torch.zeros(16))]
    outside.append(SwAVLoss()([o.float() for o in out]))
    for got, expected in zip(inside, outside):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- bad arguments

S2 = [torch.randn(3, 5), torch.randn(3, 5)]
C = torch.zeros(1, 5)

BAD = {
    "student_out not a list": (lambda: dino_loss(S2[0], S2, C), r"student_out must be a list"),
    "student_out one crop": (
        lambda: dino_loss(S2[:1], S2[:1], C),
        r"student_out must hold at least 2",
    ),
    "student_out empty": (lambda: dino_loss([], S2, C), r"student_out must hold at least one"),
    "student_out mixed shapes": (
        lambda: dino_loss([S2[0], torch.randn(3, 4)], S2, C),
        r"every tensor of student_out must have the shape of student_out\[0\]",
    ),
    "student_out[1] 1-d": (
        lambda: dino_loss([S2[0], torch.randn(5)], S2, C),
        r"student_out\[1\] must have shape \(N, K\)",
    ),
    "teacher_out too many": (
        lambda: dino_loss(S2, S2 + S2[:1], C),
        r"teacher_out must not hold more",
    ),
    "teacher_out other K": (
        lambda: dino_loss(S2, [torch.randn(3, 4)], C),
        r"teacher_out and student_out crops must have the same shape",
    ),
    "center shape": (
        lambda: dino_loss(S2, S2, torch.zeros(2, 5)),
        r"center must have shape \(1, K\)",
    ),
    "center not a tensor": (lambda: dino_loss(S2, S2, 0.0), r"center must be a torch\.Tensor"),
    "student_temperature": (
        lambda: dino_loss(S2, S2, C, student_temperature=0),
        r"student_temperature must be a finite number > 0",
    ),
    "teacher_temperature": (
        lambda: dino_loss(S2, S2, C, teacher_temperature=-1.0),
        r"teacher_temperature must be a finite number > 0",
    ),
    "epoch": (lambda: dino_teacher_temperature(-1), r"epoch must be an int >= 0"),
    "warmup_epochs": (
        lambda: dino_teacher_temperature(0, warmup_epochs=1.5),
        r"warmup_epochs must be an int >= 0",
    ),
    "out_dim": (lambda: DINOLoss(0), r"out_dim must be an int >= 1"),
    "center_momentum": (
        lambda: DINOLoss(5, center_momentum=1.5),
        r"center_momentum must be in \[0, 1\]",
    ),
    "update_center dim": (
        lambda: DINOLoss(4).update_center(S2),
        r"teacher_out crops must have shape \(N, 4\)",
    ),
    "scores 1-d": (lambda: sinkhorn_knopp(torch.randn(5)), r"scores must have shape \(N, K\)"),
    "epsilon": (lambda: sinkhorn_knopp(S2[0], epsilon=0), r"epsilon must be a finite number > 0"),
    "iterations": (lambda: sinkhorn_knopp(S2[0], iterations=0), r"iterations must be an int >= 1"),
    "scores one crop": (lambda: swav_loss(S2[:1], S2[:1]), r"scores must hold at least 2 crops"),
    "codes shape": (
        lambda: swav_loss(S2, [torch.rand(3, 4)]),
        r"codes and scores crops must have the same shape",
    ),
    "codes too many": (
        lambda: swav_loss(S2, S2 + S2),
        r"codes must not hold more crops than scores",
    ),
    "crops_for_assign repeated": (
        lambda: swav_loss(S2, S2, crops_for_assign=[1, 1]),
        r"crops_for_assign must hold at least one distinct int",
    ),
    "crops_for_assign count": (
        lambda: swav_loss(S2, S2, crops_for_assign=[1]),
        r"crops_for_assign must name one crop per entry of codes \(2\)",
    ),
    "crops_for_assign module": (lambda: SwAVLoss(crops_for_assign=[0, -1]), r"crops_for_assign"),
    "crops_for_assign beyond scores": (
        lambda: SwAVLoss(crops_for_assign=[0, 2])(S2),
        r"crops_for_assign must hold at least one distinct int in \[0, 2\)",
    ),
    "swav temperature": (
        lambda: swav_loss(S2, S2, temperature=math.inf),
        r"temperature must be a finite",
    ),
    "queue_scores count": (
        lambda: SwAVLoss()(S2, [torch.randn(4, 5)]),
        r"queue_scores must hold one \(L, K\) tensor per crop for assignment \(2\)",
    ),
    "queue_scores K": (
        lambda: SwAVLoss()(S2, [torch.randn(4, 6)] * 2),
        r"queue_scores must have K = 5 columns",
    ),
    "weight 3-d": (
        lambda: normalize_prototypes(torch.randn(2, 3, 4)),
        r"weight must have shape \(K, D\)",
    ),
    "queue length": (lambda: SwAVQueue(0, 3), r"length must be an int >= 1"),
    "queue push": (
        lambda: SwAVQueue(4, 3).push([torch.randn(2, 3)]),
        r"embeddings must be 2 tensors of shape \(B, 3\)",
    ),
    "queue prototypes": (
        lambda: SwAVQueue(4, 3).scores(torch.randn(5, 4)),
        r"prototypes must have shape \(K, 3\)",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments_raise_value_error_naming_them(case):
    call, message = BAD[case]
    with pytest.raises(ValueError, match=message):
        call()
