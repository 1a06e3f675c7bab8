"""SimSiam, Barlow Twins and VICReg against loop-by-hand references, their originals' formulas,
closed forms, gradcheck, half precision and bad arguments."""

from __future__ import annotations

import math

import objectives_reference as ref
import pytest
import torch
import torch.nn.functional as F
from objectives_testing import assert_same_value_and_grad, make_targets, soft_targets

from contrastkit.objectives import byol_loss
from contrastkit.objectives.barlow_twins import BarlowTwinsLoss, barlow_twins_loss
from contrastkit.objectives.simsiam import SimSiamLoss, simsiam_loss
from contrastkit.objectives.vicreg import VICRegLoss, vicreg_loss

N, D = 6, 5
# Per-feature scales on both sides of 1, so VICReg's hinge relu(1 - std) is active for some
# features and not for others.
SCALES = torch.tensor([0.3, 0.6, 2.0, 0.8, 1.7], dtype=torch.float64)


def _inputs(seed: int, count: int, n: int = N, d: int = D) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(n, d, generator=generator, dtype=torch.float64)
            * SCALES[torch.arange(d) % 5]
            + 0.5
        )
        .detach()
        .requires_grad_()
        for _ in range(count)
    ]


# ---- loop-by-hand references: scalar arithmetic over rows, features and pairs ----


def simsiam_by_hand(p1, p2, z1, z2, targets1, targets2) -> torch.Tensor:
    n = p1.shape[0]
    soft1, soft2 = ref.as_soft(targets1, n), ref.as_soft(targets2, n)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if soft1[i, j] != 0:
                total = total - soft1[i, j] * ref.cosine(p1[i], z2[j].detach()) / 2
            if soft2[i, j] != 0:
                total = total - soft2[i, j] * ref.cosine(p2[i], z1[j].detach()) / 2
    return total / n


def _column_mean(z: torch.Tensor, k: int) -> torch.Tensor:
    return sum(z[i, k] for i in range(z.shape[0])) / z.shape[0]


def barlow_twins_by_hand(z1, z2, lambda_offdiag, scale_loss, eps) -> torch.Tensor:
    n, d = z1.shape

    def standardized(z: torch.Tensor) -> list[list[torch.Tensor]]:  # [feature][row]
        columns = []
        for k in range(d):
            mean = _column_mean(z, k)
            biased_var = sum((z[i, k] - mean) ** 2 for i in range(n)) / n
            columns.append([(z[i, k] - mean) / torch.sqrt(biased_var + eps) for i in range(n)])
        return columns

    a, b = standardized(z1), standardized(z2)
    total = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[i][m] * b[j][m] for m in range(n)) / n
            total = total + ((1 - c_ij) ** 2 if i == j else lambda_offdiag * c_ij**2)
    return scale_loss * total


def vicreg_by_hand(z1, z2, sim_coeff, std_coeff, cov_coeff, eps) -> torch.Tensor:
    n, d = z1.shape
    invariance = sum((z1[i, k] - z2[i, k]) ** 2 for i in range(n) for k in range(d)) / (n * d)
    variance, covariance = 0.0, 0.0
    for z in (z1, z2):
        means = [_column_mean(z, k) for k in range(d)]
        for k in range(d):
            for m in range(d):
                c_km = sum((z[i, k] - means[k]) * (z[i, m] - means[m]) for i in range(n)) / (n - 1)
                if k == m:
                    std = torch.sqrt(c_km + eps)
                    if std < 1:
                        variance = variance + (1 - std) / (2 * d)
                else:
                    covariance = covariance + c_km**2 / d
    return sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance


# ---- against the references ----


@pytest.mark.parametrize("kind1", ["none", "index", "soft"])
@pytest.mark.parametrize("kind2", ["none", "soft"])
def test_simsiam_matches_loop_reference(kind1, kind2):
    p1, p2, z1, z2 = _inputs(0, 4)
    targets1, targets2 = make_targets(kind1, 10, N), make_targets(kind2, 11, N)
    ours = simsiam_loss(p1, p2, z1, z2, targets1, targets2)
    theirs = simsiam_by_hand(p1, p2, z1, z2, targets1, targets2)
    assert_same_value_and_grad(ours, theirs, [p1, p2, z1, z2])
    assert ours.dtype == torch.float64 and ours.ndim == 0


@pytest.mark.parametrize(
    ("lambda_offdiag", "scale_loss", "eps"),
    [(0.0051, 1.0, 1e-5), (0.5, 0.1, 1e-5), (0.0, 2.0, 0.3)],
)
def test_barlow_twins_matches_loop_reference(lambda_offdiag, scale_loss, eps):
    z1, z2 = _inputs(1, 2)
    ours = barlow_twins_loss(z1, z2, lambda_offdiag, scale_loss, eps)
    theirs = barlow_twins_by_hand(z1, z2, lambda_offdiag, scale_loss, eps)
    assert_same_value_and_grad(ours, theirs, [z1, z2])


@pytest.mark.parametrize(
    ("sim", "std", "cov", "eps"),
    [(25.0, 25.0, 1.0, 1e-4), (1.0, 0.0, 3.0, 1e-4), (0.0, 5.0, 0.0, 0.5)],
)
def test_vicreg_matches_loop_reference(sim, std, cov, eps):
    z1, z2 = _inputs(2, 2)
    ours = vicreg_loss(z1, z2, sim, std, cov, eps)
    assert_same_value_and_grad(ours, vicreg_by_hand(z1, z2, sim, std, cov, eps), [z1, z2])


def test_the_hinge_is_active_for_some_features_only():
    # Guards the reference test: with SCALES both branches of relu(1 - std) are exercised.
    z1, _ = _inputs(2, 2)
    std = torch.sqrt(z1.detach().var(dim=0) + 1e-4)
    assert (std < 1).any() and (std > 1).any()


# ---- against the originals' own building blocks (BatchNorm1d, Tensor.var, F.mse_loss, ...) ----


def test_barlow_twins_is_the_original_batchnorm_formula():
    # facebookresearch/barlowtwins: c = bn(z1).T @ bn(z2) / N with bn = BatchNorm1d(affine=False)
    # in training mode; on_diag + lambd * off_diag.
    z1, z2 = _inputs(3, 2, n=16, d=8)
    bn = torch.nn.BatchNorm1d(8, affine=False).double().train()
    c = bn(z1).T @ bn(z2) / 16
    off_diagonal = c - torch.diag(c.diagonal())
    expected = (c.diagonal() - 1).pow(2).sum() + 0.0051 * off_diagonal.pow(2).sum()
    torch.testing.assert_close(barlow_twins_loss(z1, z2), expected, rtol=1e-12, atol=1e-12)
    # solo-learn's scale_loss multiplies the whole loss.
    torch.testing.assert_close(barlow_twins_loss(z1, z2, scale_loss=0.1), 0.1 * expected)


def test_vicreg_is_the_original_formula():
    # facebookresearch/vicreg main_vicreg.py VICReg.forward, one process.
    x, y = _inputs(4, 2, n=16, d=8)
    repr_loss = F.mse_loss(x, y)
    xc, yc = x - x.mean(dim=0), y - y.mean(dim=0)
    std_x, std_y = torch.sqrt(xc.var(dim=0) + 0.0001), torch.sqrt(yc.var(dim=0) + 0.0001)
    std_loss = F.relu(1 - std_x).mean() / 2 + F.relu(1 - std_y).mean() / 2
    cov_x, cov_y = xc.T @ xc / 15, yc.T @ yc / 15
    mask = ~torch.eye(8, dtype=torch.bool)
    cov_loss = cov_x[mask].pow(2).sum() / 8 + cov_y[mask].pow(2).sum() / 8
    expected = 25 * repr_loss + 25 * std_loss + cov_loss
    torch.testing.assert_close(vicreg_loss(x, y), expected, rtol=1e-12, atol=1e-12)


def test_simsiam_is_the_original_formula():
    # facebookresearch/simsiam main_simsiam.py with criterion = nn.CosineSimilarity(dim=1).
    p1, p2, z1, z2 = _inputs(5, 4, n=16, d=8)
    criterion = torch.nn.CosineSimilarity(dim=1)
    expected = -(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5
    torch.testing.assert_close(simsiam_loss(p1, p2, z1, z2), expected, rtol=1e-12, atol=1e-12)


# ---- closed forms, stop-gradient, gradcheck ----


def test_simsiam_closed_forms_and_stop_gradient():
    p1, p2, z1, z2 = _inputs(6, 4)
    assert math.isclose(simsiam_loss(z2, z1, z1, z2).item(), -1.0, abs_tol=1e-12)
    assert math.isclose(simsiam_loss(-z2, -z1, z1, z2).item(), 1.0, abs_tol=1e-12)
    simsiam_loss(p1, p2, z1, z2).backward()
    assert p1.grad is not None and p2.grad is not None
    assert z1.grad is None and z2.grad is None


def test_simsiam_with_targets_is_the_byol_form():
    # i-Mix on SimSiam "by the BYOL form": the same soft-target cosine sum as byol_loss.
    p1, p2, z1, z2 = _inputs(16, 4)
    targets1, targets2 = soft_targets(26, N), make_targets("index", 27, N)
    byol = byol_loss(p1, z2, targets1) + byol_loss(p2, z1, targets2)
    torch.testing.assert_close(
        simsiam_loss(p1, p2, z1, z2, targets1, targets2), byol / 4 - 1, rtol=1e-12, atol=1e-12
    )


def test_barlow_twins_closed_forms():
    # Columns with mean 0 and biased variance 1, mutually orthogonal: c = I / (1 + eps).
    whitened = torch.tensor([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=torch.float64)
    eps = 1e-5
    expected = 2 * (1 - 1 / (1 + eps)) ** 2
    assert math.isclose(barlow_twins_loss(whitened, whitened, eps=eps).item(), expected)
    # Collapsed (constant) features standardise to 0: c = 0, the loss is D * scale_loss.
    constant = torch.full((4, 3), 7.0, dtype=torch.float64)
    assert barlow_twins_loss(constant, constant, scale_loss=0.1).item() == pytest.approx(0.3)
    # Opposite views: c = -I / (1 + eps), each diagonal term (1 + 1 / (1 + eps))^2.
    opposite = barlow_twins_loss(whitened, -whitened, eps=eps).item()
    assert math.isclose(opposite, 2 * (1 + 1 / (1 + eps)) ** 2)


def test_vicreg_closed_forms():
    # Collapsed, identical views: no invariance or covariance; std = sqrt(eps) for every feature.
    constant = torch.full((4, 3), 7.0, dtype=torch.float64)
    expected = 25 * (1 - math.sqrt(1e-4))  # two views, each (1 - sqrt(eps)) / 2
    assert math.isclose(vicreg_loss(constant, constant).item(), expected, rel_tol=1e-12)
    # Orthogonal columns with unbiased variance >= 1: only the invariance term remains.
    whitened = torch.tensor([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=torch.float64) * 2
    assert vicreg_loss(whitened, whitened).item() == 0.0
    assert math.isclose(vicreg_loss(whitened, -whitened).item(), 25 * 16.0)


def test_gradcheck_float64():
    p1, p2, z1, z2 = _inputs(7, 4, n=3, d=4)
    soft = soft_targets(17, 3)
    assert torch.autograd.gradcheck(lambda a, b: simsiam_loss(a, b, z1, z2, soft), (p1, p2))
    assert torch.autograd.gradcheck(lambda a, b: barlow_twins_loss(a, b, 0.2, 0.5), (z1, z2))
    assert torch.autograd.gradcheck(lambda a, b: vicreg_loss(a, b, 2.0, 3.0, 0.5), (z1, z2))


def test_modules_call_the_functions_and_hold_no_state():
    p1, p2, z1, z2 = _inputs(8, 4)
    soft = soft_targets(18, N)
    assert SimSiamLoss()(p1, p2, z1, z2, soft) == simsiam_loss(p1, p2, z1, z2, soft)
    assert BarlowTwinsLoss(0.1, 0.5)(z1, z2) == barlow_twins_loss(z1, z2, 0.1, 0.5)
    assert VICRegLoss(1.0, 2.0, 3.0)(z1, z2) == vicreg_loss(z1, z2, 1.0, 2.0, 3.0)
    assert "lambda_offdiag=0.0051, scale_loss=1.0" in repr(BarlowTwinsLoss())
    assert "sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0, eps=0.0001" in repr(VICRegLoss())
    for module in (SimSiamLoss(), BarlowTwinsLoss(), VICRegLoss()):
        assert module.state_dict() == {}


# ---- half precision and autocast ----


def _half_cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(9)
    a = torch.randn(8, 16, generator=generator)
    b = torch.randn(8, 16, generator=generator)
    with_constant = a.clone()
    with_constant[:, 3] = 2.5
    return {
        "random": (a, b),
        "identical": (a, a.clone()),
        "opposite": (a, -a),
        "collapsed": (a[:1].expand(8, 16).clone(), a[:1].expand(8, 16).clone()),
        "constant_feature": (with_constant, b),
        # |z| ~ 3e4: squares and covariances overflow float16 (max 65504), not float32.
        "large": (a * 3e4 / a.abs().max(), b * 3e4 / b.abs().max()),
    }


def _all_losses(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "simsiam": simsiam_loss(a, b, b, a),
        "barlow_twins": barlow_twins_loss(a, b),
        "barlow_twins_scaled": barlow_twins_loss(a, b, 0.0051, 0.1),
        "vicreg": vicreg_loss(a, b),
    }


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", list(_half_cases()))
def test_half_inputs_match_float32(half, case):
    a, b = _half_cases()[case]
    a_half, b_half = a.to(half), b.to(half)
    low = _all_losses(a_half, b_half)
    full = _all_losses(a_half.float(), b_half.float())  # the values the half tensors hold
    for name, value in low.items():
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value), (name, value)
        torch.testing.assert_close(value, full[name], rtol=1e-5, atol=1e-4, msg=name)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_saturated_half_inputs_give_the_closed_forms(half):
    a, _ = _half_cases()["random"]
    a = a.to(half)
    assert simsiam_loss(a, -a, -a, a).item() == pytest.approx(-1.0, abs=1e-6)
    collapsed = _half_cases()["collapsed"][0].to(half)
    assert barlow_twins_loss(collapsed, collapsed).item() == pytest.approx(16.0)
    assert vicreg_loss(collapsed, collapsed).item() == pytest.approx(25 * (1 - 1e-2))


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_gradients_are_finite(half):
    # "large" is left out: its true VICReg gradient (~1e13) is not representable in float16.
    for case, (a, b) in _half_cases().items():
        if case == "large":
            continue
        for name in _all_losses(a, b):
            x, y = a.to(half).requires_grad_(), b.to(half).requires_grad_()
            _all_losses(x, y)[name].backward()
            assert x.grad.dtype == half
            assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all(), (case, name)


def test_autocast_does_not_lower_the_loss_precision():
    generator = torch.Generator().manual_seed(10)
    layer = torch.nn.Linear(16, 16)
    x1, x2 = torch.randn(8, 16, generator=generator), torch.randn(8, 16, generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z1, z2 = layer(x1), layer(x2)
        assert z1.dtype == torch.bfloat16  # autocast is really on
        inside = _all_losses(z1, z2)
        grads_inside = [
            torch.autograd.grad(loss, layer.weight, retain_graph=True)[0]
            for loss in inside.values()
        ]
    outside = _all_losses(z1.float(), z2.float())
    for name, value in inside.items():
        assert value.dtype == torch.float32, name
        torch.testing.assert_close(value, outside[name], rtol=1e-6, atol=1e-6, msg=name)
    for grad in grads_inside:
        assert torch.isfinite(grad).all()


# ---- bad arguments ----

A = torch.randn(4, 3)
B = torch.randn(4, 3)

BAD = {
    "p1 1-d": (lambda: simsiam_loss(A[0], B, A, B), r"p1 must have shape \(N, D\)"),
    "z2 integer": (lambda: simsiam_loss(A, B, A, B.long()), r"z2 must have a floating dtype"),
    "p1 vs z2": (
        lambda: simsiam_loss(A, B, A, B[:, :2]),
        r"p1 and z2 must have the same shape.*\(4, 3\) and \(4, 2\)",
    ),
    "p2 vs z1": (
        lambda: simsiam_loss(A, B[:3], A, B),
        r"p2 and z1 must have the same shape.*\(3, 3\) and \(4, 3\)",
    ),
    "targets1 shape": (
        lambda: simsiam_loss(A, B, A, B, torch.full((3, 4), 0.25)),
        r"soft targets must have shape \(N, N\) = \(4, 4\), got \(3, 4\)",
    ),
    "targets2 range": (
        lambda: simsiam_loss(A, B, A, B, None, torch.tensor([0, 1, 2, 9])),
        r"index targets must lie in \[0, 4\)",
    ),
    "barlow z1 3-d": (lambda: barlow_twins_loss(A[None], B), r"z1 must have shape \(N, D\)"),
    "barlow shapes": (
        lambda: barlow_twins_loss(A, B[:3]),
        r"z1 and z2 must have the same shape.*\(4, 3\) and \(3, 3\)",
    ),
    "barlow device": (
        lambda: barlow_twins_loss(A, B.to("meta")),
        r"z1 and z2 must be on the same device, got cpu and meta",
    ),
    "barlow one row": (
        lambda: barlow_twins_loss(A[:1], B[:1]),
        r"z1 must have at least 2 rows over all ranks for batch statistics, got N = 1 on 1 rank",
    ),
    "lambda_offdiag negative": (
        lambda: barlow_twins_loss(A, B, -0.1),
        r"lambda_offdiag must be a finite number >= 0, got -0\.1",
    ),
    "lambda_offdiag bool": (
        lambda: barlow_twins_loss(A, B, True),
        r"lambda_offdiag must be a number >= 0, got True",
    ),
    "scale_loss nan": (
        lambda: barlow_twins_loss(A, B, scale_loss=float("nan")),
        r"scale_loss must be a finite number >= 0, got nan",
    ),
    "barlow eps zero": (
        lambda: barlow_twins_loss(A, B, eps=0.0),
        r"eps must be a finite number > 0, got 0\.0",
    ),
    "vicreg empty": (lambda: vicreg_loss(A[:0], B[:0]), r"z1 must be non-empty"),
    "vicreg one row": (lambda: vicreg_loss(A[:1], B[:1]), r"z1 must have at least 2 rows"),
    "sim_coeff string": (
        lambda: vicreg_loss(A, B, "25"),
        r"sim_coeff must be a number >= 0, got '25'",
    ),
    "std_coeff inf": (
        lambda: vicreg_loss(A, B, std_coeff=float("inf")),
        r"std_coeff must be a finite number >= 0, got inf",
    ),
    "cov_coeff negative": (
        lambda: vicreg_loss(A, B, cov_coeff=-1),
        r"cov_coeff must be a finite number >= 0, got -1",
    ),
    "vicreg eps negative": (
        lambda: vicreg_loss(A, B, eps=-1e-4),
        r"eps must be a finite number > 0, got -0\.0001",
    ),
    "BarlowTwinsLoss scale": (
        lambda: BarlowTwinsLoss(scale_loss=-1.0),
        r"scale_loss must be a finite number >= 0, got -1\.0",
    ),
    "VICRegLoss eps": (lambda: VICRegLoss(eps=0), r"eps must be a finite number > 0, got 0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments_raise_value_error_naming_them(case):
    call, message = BAD[case]
    with pytest.raises(ValueError, match=message):
        call()
