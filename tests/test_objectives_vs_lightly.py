"""contrastkit.objectives against lightly's implementation of the same losses, on the same inputs.

lightly is a test-only dependency of the integration session, pinned and installed without its
dependencies (`pip install --no-deps lightly==1.6.0`, see noxfile.py): `lightly.loss` imports torch,
torchvision and numpy only (its declared hydra-core and pytorch_lightning are for its CLI/trainer;
timm, when present, is used by model modules these tests do not touch). Sources below are the
installed wheel's files, `lightly==1.6.0 <path>:<lines>`.

Argument mapping (ours <- lightly), one process:

| contrastkit | lightly 1.6.0 | relation |
| --- | --- | --- |
| `nt_xent_loss(z1, z2, T)` | `NTXentLoss(T)(z1, z2)` | equal |
| `moco_loss(q, k, queue.keys, T)`, `MemoryQueue.enqueue(k)` | `NTXentLoss(T, memory_bank_size=(K, D))(q, k)` | equal while K is a multiple of the batch; lightly drops the batch's tail at the end of its bank, ours wraps around |
| `simsiam_loss(p1, p2, z1, z2)` | `(NegativeCosineSimilarity()(p1, z2.detach()) + ...(p2, z1.detach())) / 2` | equal (norms >= 1e-8); lightly scales rows with norm < 1e-8 down by norm / 1e-8 |
| `byol_loss(p, z)` | `2 + 2 * NegativeCosineSimilarity()(p, z.detach())` | equal |
| `barlow_twins_loss(z1, z2, lambda_offdiag=l, scale_loss=1.0)` | `BarlowTwinsLoss(lambda_param=l)(z1, z2)` | equal; defaults differ: 0.0051 (paper) vs 5e-3 |
| `vicreg_loss(z1, z2, s, v, c, eps)` | `VICRegLoss(lambda_param=s, mu_param=v, nu_param=c, eps=eps)(z1, z2)` | equal |
| `DINOLoss(K, w, t, e, s, m)(student, teacher, epoch)` | `DINOLoss(K, w, t, e, s, m)(teacher, student, epoch=epoch)` | equal (schedule in float32 there); centre (1, K) vs (1, 1, K); ours detaches the teacher and updates the centre in training mode only |
| `SwAVLoss(T, eps, it, crops_for_assign=range(H))(high + low, queue)` | `SwaVLoss(T, it, eps)(high, low, queue)` | equal where lightly's `exp(scores / eps)` is finite |
| `sinkhorn_knopp(scores, eps, it)` | `lightly.loss.swav_loss.sinkhorn(scores, it, eps)` | equal where finite |
| `nearest_neighbours(z, keys).values` | `NNMemoryBankModule((K, D))(z)` | same rows (ours stores unit rows, lightly the raw ones) |
| `nnclr_loss` | `0.5 * (NTXentLoss(T)(NN(z1), p2) + NTXentLoss(T)(NN(z2), p1))` (examples/pytorch/nnclr.py) | different losses: lightly's is `0.5 * (nt_xent_loss(NN(z1), p2) + nt_xent_loss(NN(z2), p1))` |
| `mocov3_loss`, `supcon_loss`, `npair_loss`, `isd_loss` | none in lightly 1.6.0 | recorded by `test_lightly_has_no_mocov3_or_supcon_loss` |
"""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
import torch.nn.functional as F

lightly_loss = pytest.importorskip(
    "lightly.loss", reason="lightly is installed by the integration session (noxfile.py)"
)
from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn  # noqa: E402
from lightly.models.modules import NNMemoryBankModule  # noqa: E402

from contrastkit.objectives import (  # noqa: E402
    DINOLoss,
    MemoryQueue,
    SwAVLoss,
    barlow_twins_loss,
    byol_loss,
    dino_teacher_temperature,
    moco_loss,
    mocov3_loss,
    nearest_neighbours,
    nnclr_loss,
    npair_loss,
    nt_xent_loss,
    simsiam_loss,
    sinkhorn_knopp,
    supcon_loss,
    vicreg_loss,
)

# The comparisons below are written against this release: a new pin must be re-checked.
LIGHTLY_VERSION = "1.6.0"


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def _value_and_grads(loss_fn, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, list]:
    """loss_fn(*leaves) and the gradient of every leaf (None where none reached it)."""
    leaves = _leaves(*inputs)
    loss = loss_fn(*leaves)
    loss.backward()
    return loss.detach(), [leaf.grad for leaf in leaves]


def _assert_same(ours, theirs, inputs, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    """Equal values and equal gradients (a leaf without gradient must lack it in both)."""
    value, grads = _value_and_grads(ours, inputs)
    value_l, grads_l = _value_and_grads(theirs, inputs)
    torch.testing.assert_close(value, value_l.reshape(value.shape), rtol=rtol, atol=atol)
    for i, (g, g_l) in enumerate(zip(grads, grads_l, strict=True)):
        if g is None or g_l is None:
            assert g is None and (g_l is None or not g_l.any()), f"input {i}: gradient reached one"
            continue
        torch.testing.assert_close(g, g_l, rtol=rtol * 10, atol=atol * 10, msg=f"input {i}")


def test_lightly_is_the_pinned_version() -> None:
    assert importlib.metadata.version("lightly") == LIGHTLY_VERSION, (
        "these comparisons were checked against lightly " + LIGHTLY_VERSION
    )


# ---------------------------------------------------------------- NT-Xent, MoCo v2 memory bank


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_nt_xent_equals_lightly_ntxent(temperature: float) -> None:
    z1, z2 = _randn(8, 16, seed=1), _randn(8, 16, seed=2)
    criterion = lightly_loss.NTXentLoss(temperature=temperature)
    _assert_same(lambda a, b: nt_xent_loss(a, b, temperature), criterion, [z1, z2])


def _lightly_bank(size: int, dim: int, temperature: float, initial: torch.Tensor):
    criterion = lightly_loss.NTXentLoss(temperature=temperature, memory_bank_size=(size, dim))
    criterion.memory_bank.bank.copy_(initial)  # (K, D) rows; handed out transposed
    return criterion


def test_moco_loss_and_queue_equal_lightly_memory_bank_ntxent() -> None:
    """lightly's MoCo loss: NTXentLoss with a bank; logits [q.k | q @ bank] / T, then enqueue k.

    lightly==1.6.0 lightly/loss/ntx_ent_loss.py:119-148 (bank read before the update, positive in
    column 0) and lightly/models/modules/memory_bank.py:151-170 (the update).
    """
    size, dim, n, temperature = 12, 8, 4, 0.2  # 12 = 3 batches: no wrap-around difference
    queue = MemoryQueue(size, dim, seed=3)
    criterion = _lightly_bank(size, dim, temperature, queue.keys)
    for step in range(5):
        q = _randn(n, dim, seed=10 + step, dtype=torch.float32)
        k = _randn(n, dim, seed=20 + step, dtype=torch.float32)
        keys_before = queue.keys.clone()
        _assert_same(
            lambda a, b, keys=keys_before: moco_loss(a, b, keys, temperature),
            criterion,
            [q, k],
            rtol=1e-5,
            atol=1e-6,
        )
        # _assert_same ran lightly's forward once more (update=True since q requires grad): undo.
        criterion.memory_bank.bank.copy_(keys_before)
        criterion.memory_bank.bank_ptr.copy_(queue.ptr.view(1))
        criterion(q.clone().requires_grad_(True), k)
        queue.enqueue(k)
        torch.testing.assert_close(criterion.memory_bank.bank, queue.keys)
        assert int(criterion.memory_bank.bank_ptr) == int(queue.ptr)


def test_memory_bank_drops_the_tail_where_ours_wraps_around() -> None:
    """Deliberate difference: at the end of the bank lightly writes only the rows that fit and
    restarts at row 0, dropping the rest of that batch (memory_bank.py:165-167); `MemoryQueue`
    wraps the batch around, so it always holds the newest `size` keys."""
    size, dim, n = 10, 4, 4
    queue = MemoryQueue(size, dim, seed=0)
    criterion = _lightly_bank(size, dim, 0.5, queue.keys)
    batches = [F.normalize(_randn(n, dim, seed=s, dtype=torch.float32), dim=1) for s in range(3)]
    for keys in batches:
        criterion(keys.clone().requires_grad_(True), keys)
        queue.enqueue(keys)
    bank = criterion.memory_bank.bank
    torch.testing.assert_close(bank[:8], torch.cat(batches[:2]))  # both: batches 0 and 1
    torch.testing.assert_close(bank[8:], batches[2][:2])  # lightly: the rows that fit ...
    assert int(criterion.memory_bank.bank_ptr) == 0  # ... and batch 2's rows 2:4 are lost
    torch.testing.assert_close(queue.keys[8:], batches[2][:2])
    torch.testing.assert_close(queue.keys[:2], batches[2][2:])  # ours: wrapped over batch 0
    torch.testing.assert_close(queue.keys[2:8], torch.cat(batches[:2])[2:])
    assert int(queue.ptr) == 2


def test_memory_bank_is_not_in_lightly_state_dict() -> None:
    """Deliberate difference: lightly registers its bank and pointer with `persistent=False`
    (memory_bank.py:84-94), so a checkpoint restarts it from random rows; `MemoryQueue` keeps both
    in its `state_dict` and a resumed run continues with the same queue."""
    criterion = lightly_loss.NTXentLoss(memory_bank_size=(8, 4))
    assert criterion.state_dict() == {}
    assert set(MemoryQueue(8, 4).state_dict()) == {"keys", "ptr"}
    assert NNMemoryBankModule(size=(8, 4)).state_dict() == {}


# ---------------------------------------------------------------- SimSiam, BYOL


def test_simsiam_equals_two_lightly_negative_cosines() -> None:
    """lightly's SimSiam: 0.5 * (ncs(p0, z1) + ncs(p1, z0)) with z detached by the model
    (examples/pytorch/simsiam.py); ours detaches z itself, so no gradient reaches z in either."""
    ncs = lightly_loss.NegativeCosineSimilarity()
    inputs = [_randn(8, 16, seed=s) for s in range(4)]  # p1, p2, z1, z2
    _assert_same(
        simsiam_loss,
        lambda p1, p2, z1, z2: 0.5 * (ncs(p1, z2.detach()) + ncs(p2, z1.detach())),
        inputs,
    )


def test_byol_equals_lightly_negative_cosine_shifted() -> None:
    """lightly's BYOL uses NegativeCosineSimilarity: `byol_loss(p, z) = 2 - 2 cos = 2 + 2 ncs`."""
    ncs = lightly_loss.NegativeCosineSimilarity()
    inputs = [_randn(8, 16, seed=5), _randn(8, 16, seed=6)]
    _assert_same(byol_loss, lambda p, z: 2 + 2 * ncs(p, z.detach()), inputs)


def test_negative_cosine_eps_differs_only_for_tiny_rows() -> None:
    """Deliberate difference: `F.cosine_similarity(eps=1e-8)` clamps each norm at 1e-8, so a row
    of norm r < 1e-8 has its cosine scaled by r / 1e-8; ours normalises with a floor of 1e-12."""
    ncs = lightly_loss.NegativeCosineSimilarity()
    p, z = _randn(4, 8, seed=7), _randn(4, 8, seed=8)
    p[0] *= 1e-10 / p[0].norm()
    cosines = F.cosine_similarity(F.normalize(p, dim=1), z)  # the direction's cosine
    ours = byol_loss(p, z)
    scaled = cosines.clone()
    scaled[0] *= 1e-10 / 1e-8
    torch.testing.assert_close(ours, (2 - 2 * cosines).mean())
    torch.testing.assert_close(2 + 2 * ncs(p, z), (2 - 2 * scaled).mean())


# ---------------------------------------------------------------- Barlow Twins, VICReg


def test_barlow_twins_equals_lightly() -> None:
    """lightly 1.6.0 standardises with `F.batch_norm(training=True)` (biased variance, eps 1e-5,
    barlow_twins_loss.py:92-101), as the original's BatchNorm1d and ours; c = z_a^T z_b / N."""
    z1, z2 = _randn(16, 12, seed=9) * 3 + 1, _randn(16, 12, seed=10)
    criterion = lightly_loss.BarlowTwinsLoss(lambda_param=0.0051)
    _assert_same(lambda a, b: barlow_twins_loss(a, b, 0.0051, scale_loss=1.0), criterion, [z1, z2])


def test_barlow_twins_default_lambda_differs() -> None:
    """Deliberate difference: our default lambda_offdiag is the paper's 0.0051, lightly's 5e-3."""
    z1, z2 = _randn(16, 12, seed=11), _randn(16, 12, seed=12)
    theirs = lightly_loss.BarlowTwinsLoss()(z1, z2)
    torch.testing.assert_close(theirs, barlow_twins_loss(z1, z2, lambda_offdiag=5e-3))
    assert not torch.isclose(theirs, barlow_twins_loss(z1, z2), rtol=1e-9, atol=0)
    torch.testing.assert_close(barlow_twins_loss(z1, z2, 5e-3, scale_loss=0.1), 0.1 * theirs)


@pytest.mark.parametrize("coefficients", [(25.0, 25.0, 1.0, 1e-4), (5.0, 50.0, 0.5, 1e-3)])
def test_vicreg_equals_lightly(coefficients: tuple[float, float, float, float]) -> None:
    """lightly's variance term is halved over the two views and its covariance is / D per view
    (vicreg_loss.py:106-109, 165-175), as facebookresearch/vicreg and ours."""
    sim, std, cov, eps = coefficients
    z1, z2 = _randn(16, 12, seed=13) * 0.3, _randn(16, 12, seed=14) * 2
    criterion = lightly_loss.VICRegLoss(lambda_param=sim, mu_param=std, nu_param=cov, eps=eps)
    _assert_same(lambda a, b: vicreg_loss(a, b, sim, std, cov, eps), criterion, [z1, z2])


# ---------------------------------------------------------------- DINO


def _dino_pair(out_dim: int, warmup_epochs: int):
    settings = {"warmup": 0.04, "teacher": 0.07, "student": 0.1, "momentum": 0.9}
    ours = DINOLoss(
        out_dim,
        warmup_teacher_temperature=settings["warmup"],
        teacher_temperature=settings["teacher"],
        warmup_epochs=warmup_epochs,
        student_temperature=settings["student"],
        center_momentum=settings["momentum"],
    )
    theirs = lightly_loss.DINOLoss(
        output_dim=out_dim,
        warmup_teacher_temp=settings["warmup"],
        teacher_temp=settings["teacher"],
        warmup_teacher_temp_epochs=warmup_epochs,
        student_temp=settings["student"],
        center_momentum=settings["momentum"],
    )
    return ours, theirs


def test_dino_equals_lightly_over_steps_with_multicrop() -> None:
    """2 global + 3 local crops over 5 epochs of warm-up and after: loss, student gradients and
    the centre after each step. lightly takes (teacher_out, student_out) in that order and keeps
    the centre as (1, 1, K) (dino_loss.py:92, 142-170)."""
    out_dim, n = 32, 6
    ours, theirs = _dino_pair(out_dim, warmup_epochs=3)
    for epoch in range(5):
        student = [_randn(n, out_dim, seed=100 * epoch + v, dtype=torch.float32) for v in range(5)]
        teacher = [
            _randn(n, out_dim, seed=100 * epoch + 50 + t, dtype=torch.float32) for t in range(2)
        ]
        s_ours, s_theirs = _leaves(*student), _leaves(*student)
        loss = ours(s_ours, teacher, epoch)
        loss_l = theirs(teacher, s_theirs, epoch=epoch)
        torch.testing.assert_close(loss, loss_l, rtol=1e-6, atol=1e-6)
        loss.backward()
        loss_l.backward()
        for a, b in zip(s_ours, s_theirs, strict=True):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(ours.center, theirs.center.view(1, out_dim))


def test_dino_teacher_temperature_schedule_matches_lightly() -> None:
    """lightly's warm-up is `torch.linspace` in float32 (dino_loss.py:97-101), ours float64:
    the same schedule within float32 rounding, constant after the warm-up in both."""
    ours, theirs = _dino_pair(8, warmup_epochs=30)
    for epoch in range(30):
        assert (
            abs(float(theirs.teacher_temp_schedule[epoch]) - ours.teacher_temperature_at(epoch))
            < 1e-8
        )
    assert ours.teacher_temperature_at(45) == dino_teacher_temperature(45, 0.04, 0.07, 30) == 0.07
    assert theirs.teacher_temp == 0.07


def test_dino_deliberate_differences_teacher_gradient_and_eval_mode() -> None:
    """Ours detaches the teacher outputs (lightly relies on the caller's no_grad) and leaves the
    centre alone in eval mode (lightly updates it on every forward)."""
    out_dim = 16
    ours, theirs = _dino_pair(out_dim, warmup_epochs=0)
    student = [_randn(4, out_dim, seed=s, dtype=torch.float32) for s in range(3)]
    teacher = [_randn(4, out_dim, seed=10 + s, dtype=torch.float32) for s in range(2)]
    t_ours, t_theirs = _leaves(*teacher), _leaves(*teacher)
    ours(_leaves(*student), t_ours, 0).backward()
    theirs(t_theirs, _leaves(*student), epoch=0).backward()
    assert all(t.grad is None for t in t_ours)
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in t_theirs)
    ours.eval()
    theirs.eval()
    before, before_l = ours.center.clone(), theirs.center.clone()
    ours(student, teacher, 0)
    theirs(teacher, student, epoch=0)
    assert torch.equal(ours.center, before)
    assert not torch.equal(theirs.center, before_l)


# ---------------------------------------------------------------- SwAV, Sinkhorn


def _cosine_scores(n: int, k: int, dim: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    z = F.normalize(_randn(n, dim, seed=seed, dtype=dtype), dim=1)
    prototypes = F.normalize(_randn(k, dim, seed=1000 + seed, dtype=dtype), dim=1)
    return z @ prototypes.T


@pytest.mark.parametrize("epsilon", [0.05, 0.03])
def test_sinkhorn_equals_lightly_sinkhorn(epsilon: float) -> None:
    scores = _cosine_scores(12, 20, 8, seed=0)
    torch.testing.assert_close(
        sinkhorn_knopp(scores, epsilon, iterations=3),
        lightly_sinkhorn(scores, iterations=3, epsilon=epsilon),
        rtol=1e-10,
        atol=1e-12,
    )


def test_sinkhorn_stays_finite_where_lightly_overflows() -> None:
    """Deliberate difference: lightly's `exp(scores / epsilon)` (swav_loss.py:43) overflows
    float32 once a score exceeds ~88 * epsilon; ours runs in the log domain and gives the codes
    lightly's iterations give in float64 (where they are finite)."""
    scores = _cosine_scores(8, 10, 4, seed=1, dtype=torch.float32)
    scores[0] = 1.0  # cosine 1: exp(1 / 0.01) = exp(100) > float32 max
    theirs32 = lightly_sinkhorn(scores, iterations=3, epsilon=0.01)
    assert not torch.isfinite(theirs32).all()
    ours = sinkhorn_knopp(scores, epsilon=0.01, iterations=3)
    assert torch.isfinite(ours).all()
    theirs64 = lightly_sinkhorn(scores.double(), iterations=3, epsilon=0.01)
    torch.testing.assert_close(ours, theirs64.float(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("with_queue", [False, True])
@pytest.mark.parametrize("high_resolution", [2, 3])
def test_swav_equals_lightly(with_queue: bool, high_resolution: int) -> None:
    """lightly assigns codes from every high-resolution crop (swav_loss.py:161-193): ours with
    `crops_for_assign = range(high_resolution)`. Its queue rows go after the batch and ours before
    it: Sinkhorn does not depend on row order, so the codes are the same."""
    n, k, low_resolution = 8, 16, 2
    crops = [_cosine_scores(n, k, 6, seed=s) for s in range(high_resolution + low_resolution)]
    queue = [_cosine_scores(24, k, 6, seed=50 + i) for i in range(high_resolution)]
    queue_arg = queue if with_queue else None
    ours = SwAVLoss(0.1, 0.05, 3, crops_for_assign=tuple(range(high_resolution)))
    theirs = lightly_loss.SwaVLoss(temperature=0.1, sinkhorn_iterations=3, sinkhorn_epsilon=0.05)
    _assert_same(
        lambda *c: ours(list(c), queue_arg),
        lambda *c: theirs(list(c[:high_resolution]), list(c[high_resolution:]), queue_arg),
        crops,
    )


# ---------------------------------------------------------------- NNCLR


def test_nearest_neighbours_equal_lightly_nn_memory_bank() -> None:
    """lightly's NNMemoryBankModule takes the argmax of cosine similarity too
    (nn_memory_bank.py:57-70) but keeps raw rows; MemoryQueue keeps unit rows."""
    size, dim, n = 32, 8, 10
    support = _randn(size, dim, seed=0, dtype=torch.float32) * 3
    bank = NNMemoryBankModule(size=(size, dim))
    bank.bank.copy_(support)
    z = _randn(n, dim, seed=1, dtype=torch.float32)
    theirs = bank(z, update=False)
    ours = nearest_neighbours(z, support)
    torch.testing.assert_close(ours.values, theirs)
    queue = MemoryQueue(size, dim)
    queue.keys.copy_(F.normalize(support, dim=1))
    torch.testing.assert_close(nearest_neighbours(z, queue.keys).values, F.normalize(theirs, dim=1))
    bank(z, update=True)
    queue.enqueue(z)
    torch.testing.assert_close(bank.bank[:n], z)  # raw rows
    torch.testing.assert_close(queue.keys[:n], F.normalize(z, dim=1))  # unit rows


def test_lightly_nnclr_recipe_is_nt_xent_on_neighbours_not_nnclr_loss() -> None:
    """Deliberate difference: lightly's NNCLR (examples/pytorch/nnclr.py) applies its SimCLR
    NTXentLoss to (NN(z), p): 2N anchors, same-view negatives. `nnclr_loss` follows the paper and
    solo-learn: the N neighbours are the only anchors, the other view's predictions the candidates
    (`npair_loss(NN(z1), p2)`), so the numbers differ; both relations are asserted."""
    size, dim, n, temperature = 64, 8, 8, 0.2
    support = _randn(size, dim, seed=2, dtype=torch.float32)
    z1, z2, p1, p2 = (_randn(n, dim, seed=s, dtype=torch.float32) for s in range(10, 14))
    bank = NNMemoryBankModule(size=(size, dim))
    bank.bank.copy_(support)
    criterion = lightly_loss.NTXentLoss(temperature=temperature)
    nn1, nn2 = bank(z1), bank(z2)
    theirs = 0.5 * (criterion(nn1, p2) + criterion(nn2, p1))
    torch.testing.assert_close(
        theirs, 0.5 * (nt_xent_loss(nn1, p2, temperature) + nt_xent_loss(nn2, p1, temperature))
    )
    ours = nnclr_loss(z1, z2, p1, p2, support, temperature)
    torch.testing.assert_close(
        ours, 0.5 * (npair_loss(nn1, p2, temperature) + npair_loss(nn2, p1, temperature))
    )
    assert abs(float(ours) - float(theirs)) > 0.05


# ---------------------------------------------------------------- losses lightly does not have


def test_lightly_has_no_mocov3_or_supcon_loss() -> None:
    """lightly 1.6.0 ships no MoCo v3 loss and no SupConLoss, so `mocov3_loss` and `supcon_loss`
    are checked against their originals' formulas in the objectives tests instead.

    A lightly MoCo v3 user reaches for `NTXentLoss(T)(q, k)`: SimCLR's 2N-anchor loss, which is
    neither MoCo v3's `ctr = 2T * CE(q @ k.T / T, arange)` (one direction, keys only, times 2T) nor
    its sum over the two view pairs. lightly's unreleased SupConLoss (lightly-ai/lightly
    lightly/loss/supcon_loss.py at 0bc584973e49299b54ffbf1b73ca05710efc91c1) computes L_out times
    T when `rescale=True`, i.e. `supcon_loss(views, labels, T, base_temperature=1.0)`. When a new
    pin ships either class, this test fails: compare it here then.
    """
    assert not hasattr(lightly_loss, "SupConLoss")
    assert not any("mocov3" in name.lower() for name in dir(lightly_loss))
    q1, q2, k1, k2 = (_randn(8, 16, seed=s) for s in range(20, 24))
    temperature = 0.2
    ctr = mocov3_loss(q1, q2, k1, k2, temperature)
    expected = 2 * temperature * (npair_loss(q1, k2, temperature) + npair_loss(q2, k1, temperature))
    torch.testing.assert_close(ctr, expected)
    simclr = lightly_loss.NTXentLoss(temperature)
    assert abs(float(ctr) - float(simclr(q1, k2) + simclr(q2, k1))) > 0.1
    # The SupCon relation stated above, on the L_out formula written out by hand.
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2, 3])
    views = [_randn(8, 16, seed=s) for s in (30, 31)]
    unit = F.normalize(torch.cat(views), dim=1)
    logits = unit @ unit.T / temperature
    self_mask = torch.eye(16, dtype=torch.bool)
    log_prob = logits.masked_fill(self_mask, float("-inf")).log_softmax(dim=1)
    positives = (labels.repeat(2)[:, None] == labels.repeat(2)[None, :]) & ~self_mask
    l_out = -(log_prob.masked_fill(~positives, 0).sum(1) / positives.sum(1)).mean()
    torch.testing.assert_close(
        supcon_loss(views, labels, temperature, base_temperature=1.0), temperature * l_out
    )


# ---------------------------------------------------------------- two gloo ranks

WORLD, ROWS_PER_RANK = 2, 4


def _distributed_data() -> dict[str, torch.Tensor]:
    n = WORLD * ROWS_PER_RANK
    return {
        "z1": _randn(n, 6, seed=40) * 2 + 1,
        "z2": _randn(n, 6, seed=41),
        "student": torch.stack([_randn(n, 12, seed=42 + v) for v in range(3)]),
        "teacher": torch.stack([_randn(n, 12, seed=45 + t) for t in range(2)]),
        "scores": torch.stack([_cosine_scores(n, 10, 5, seed=47 + v) for v in range(3)]),
    }


def _pairs_and_crops(data: dict[str, torch.Tensor], rows: slice):
    z = _leaves(data["z1"][rows], data["z2"][rows])
    student = list(data["student"][:, rows].float())
    teacher = list(data["teacher"][:, rows].float())
    return z, student, teacher, list(data["scores"][:, rows])


def _lightly_losses(data: dict[str, torch.Tensor], rows: slice, distributed: bool) -> dict:
    """lightly's losses on `rows` (with its gather_distributed switches on when distributed)."""
    (a, b), student, teacher, scores = _pairs_and_crops(data, rows)
    out = {}
    nt_xent = lightly_loss.NTXentLoss(0.2, gather_distributed=distributed)(a, b)
    nt_xent.backward()
    out["nt_xent"], out["nt_xent_grad"] = nt_xent.detach(), a.grad
    out["vicreg"] = lightly_loss.VICRegLoss(gather_distributed=distributed)(a, b).detach()
    barlow = lightly_loss.BarlowTwinsLoss(0.0051, gather_distributed=distributed)
    out["barlow_twins"] = barlow(a, b).detach()
    dino = _dino_pair(12, warmup_epochs=0)[1]
    dino(teacher, student, epoch=0)
    out["dino_center"] = dino.center.view(1, -1)
    swav = lightly_loss.SwaVLoss(sinkhorn_gather_distributed=distributed)
    out["swav"] = swav(scores[:2], scores[2:]).detach().view(())
    return out


def _our_losses(data: dict[str, torch.Tensor], rows: slice) -> dict:
    (a, b), student, teacher, scores = _pairs_and_crops(data, rows)
    out = {}
    nt_xent = nt_xent_loss(a, b, 0.2)
    nt_xent.backward()
    out["nt_xent"], out["nt_xent_grad"] = nt_xent.detach(), a.grad
    out["vicreg"] = vicreg_loss(a, b).detach()
    out["barlow_twins"] = barlow_twins_loss(a, b, 0.0051).detach()
    dino = _dino_pair(12, warmup_epochs=0)[0]
    dino(student, teacher, 0)
    out["dino_center"] = dino.center.clone()
    out["swav"] = SwAVLoss()(scores).detach()
    return out


def _rank_main(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD
    )
    try:
        data = _distributed_data()
        rows = slice(rank * ROWS_PER_RANK, (rank + 1) * ROWS_PER_RANK)
        results = {"ours": _our_losses(data, rows), "lightly": _lightly_losses(data, rows, True)}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_ranks_against_lightly_distributed(tmp_path) -> None:
    """Both on 2 gloo ranks with lightly's gather switches on: NT-Xent (loss and input gradient),
    VICReg, DINO's centre and SwAV's distributed Sinkhorn agree rank by rank, and their rank mean
    equals lightly on one process over the full batch.

    Deliberate difference, Barlow Twins: lightly standardises each rank's batch with its own
    statistics and averages the per-rank c (barlow_twins_loss.py:68-83); ours uses the global
    batch's statistics (the original's SyncBatchNorm), so every rank holds the full-batch loss,
    which lightly gives on one process only.
    """
    torch.multiprocessing.spawn(
        _rank_main, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    full = _lightly_losses(_distributed_data(), slice(None), distributed=False)
    for rank, result in enumerate(ranks):
        ours, theirs = result["ours"], result["lightly"]
        for key in ("nt_xent", "nt_xent_grad", "vicreg", "dino_center", "swav"):
            torch.testing.assert_close(ours[key], theirs[key], msg=f"rank {rank} {key}")
        torch.testing.assert_close(ours["dino_center"], full["dino_center"])
        # the gather's backward sums over ranks: rank r's rows get W x their full-batch gradient
        rows = slice(rank * ROWS_PER_RANK, (rank + 1) * ROWS_PER_RANK)
        torch.testing.assert_close(ours["nt_xent_grad"], WORLD * full["nt_xent_grad"][rows])
        torch.testing.assert_close(ours["barlow_twins"], full["barlow_twins"])
        assert abs(float(theirs["barlow_twins"]) - float(full["barlow_twins"])) > 1e-3
    for key in ("nt_xent", "vicreg", "swav"):
        mean = sum(r["ours"][key] for r in ranks) / WORLD
        torch.testing.assert_close(mean, full[key].reshape(mean.shape), msg=key)
