"""SimSiam, Barlow Twins and VICReg as pretrain methods: each loss against a by-hand computation
on the method's own modules (BatchNorm batches, stop-gradient, i-Mix targets), the heads the
originals use, i-Mix's refusal with its reason, a state_dict round trip, the smoke config with only
`method.name` changed, and a learnable toy on which each lowers its loss end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pretrain_helpers import (
    CONFIG_DIR,
    SMOKE_SHRINK,
    tabular_method,
    tiny_tabular_config,
    toy_tabular,
)
from torch import nn

from contrastkit.backbones import create_backbone
from contrastkit.objectives import barlow_twins_loss, imix_mixup, simsiam_loss, vicreg_loss
from contrastkit.pipelines.config import config_from_dict, load_config
from contrastkit.pipelines.methods import METHODS
from contrastkit.pipelines.metrics import read_metrics
from contrastkit.pipelines.pretrain import run_pretrain

FEATURES = 6
N = 12


_method = tabular_method


def _views(n: int = N, seed: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=generator)
    return [x + 0.1 * torch.randn(n, FEATURES, generator=generator), x]


def _projections(method, v1: torch.Tensor, v2: torch.Tensor, separate: bool):
    """(features, z1, z2) by hand: one forward of both views, or one forward per view."""
    if separate:
        (f1, z1), (f2, z2) = method.encoder(v1), method.encoder(v2)
        return torch.cat([f1, f2]), z1, z2
    features, z = method.encoder(torch.cat([v1, v2]))
    return features, *z.chunk(2)


def _cosine_rows(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(N, N) cosines cos(p_i, z_j), written out: dot products over the product of norms."""
    dots = p @ z.T
    return dots / (p.norm(dim=1)[:, None] * z.norm(dim=1)[None, :])


# ------------------------------------------------------------------------------------ SimSiam


@pytest.mark.parametrize("separate", [False, True])
def test_simsiam_is_negative_cosine_with_stop_gradient(separate: bool) -> None:
    method = _method("simsiam", separate_forwards=separate).train()
    v1, v2 = _views()
    out = method([v1, v2], step=0)
    out.loss.backward()
    got = {k: p.grad.clone() for k, p in method.named_parameters() if p.grad is not None}
    method.zero_grad()

    # By hand, in the same BatchNorm batches (train mode): p = predictor(z), z detached as target.
    features, z1, z2 = _projections(method, v1, v2, separate)
    if separate:
        p1, p2 = method.predictor(z1), method.predictor(z2)
    else:
        p1, p2 = method.predictor(torch.cat([z1, z2])).chunk(2)
    cos_12 = _cosine_rows(p1, z2.detach()).diagonal()
    cos_21 = _cosine_rows(p2, z1.detach()).diagonal()
    expected = -(cos_12.mean() + cos_21.mean()) / 2
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.loss, simsiam_loss(p1, p2, z1, z2))
    torch.testing.assert_close(out.features, features.detach())
    assert out.label_weights is None and not out.features.requires_grad

    # The gradient is that of the stop-gradient loss; without the detach it would differ.
    expected.backward(retain_graph=True)
    params = dict(method.named_parameters())
    for key, grad in got.items():
        torch.testing.assert_close(grad, params[key].grad, msg=key)
    method.zero_grad()
    no_stop = -(_cosine_rows(p1, z2).diagonal().mean() + _cosine_rows(p2, z1).diagonal().mean()) / 2
    no_stop.backward()
    assert any(not torch.allclose(grad, params[key].grad) for key, grad in got.items())


def test_simsiam_imix_mixes_each_view_against_the_clean_projections() -> None:
    method = _method("simsiam", "mixup").eval()  # eval: BatchNorm per sample
    v1, v2 = _views()
    out = method([v1, v2], step=0, generator=torch.Generator().manual_seed(5))
    reference = torch.Generator().manual_seed(5)
    x1, t1 = imix_mixup(v1, 1.0, reference)  # view 1's draw first, then view 2's (i-Mix's order)
    x2, t2 = imix_mixup(v2, 1.0, reference)
    p1 = method.predictor(method.encoder(x1)[1])
    p2 = method.predictor(method.encoder(x2)[1])
    # The clean views give the targets, detached (the stop-gradient branch).
    z1, z2 = method.encoder(v1)[1].detach(), method.encoder(v2)[1].detach()
    # BYOL's i-Mix form: each mixed query against every clean target, weighted by its labels.
    by_hand = (
        -((t1 * _cosine_rows(p1, z2)).sum(1).mean() + (t2 * _cosine_rows(p2, z1)).sum(1).mean()) / 2
    )
    torch.testing.assert_close(out.loss, by_hand)
    torch.testing.assert_close(out.loss, simsiam_loss(p1, p2, z1, z2, t1, t2))
    torch.testing.assert_close(out.label_weights, torch.cat([t1, t2]))
    features = torch.cat([method.encoder(x1)[0], method.encoder(x2)[0]])
    torch.testing.assert_close(out.features, features)
    # Same gradient as the by-hand loss: the targets' forward carries none.
    out.loss.backward()
    got = {k: p.grad.clone() for k, p in method.named_parameters() if p.grad is not None}
    method.zero_grad()
    by_hand.backward()
    for key, param in method.named_parameters():
        if key in got:
            torch.testing.assert_close(got[key], param.grad, msg=key)


def test_simsiam_heads_follow_the_original() -> None:
    # The preset gives the 3-layer projector when the config leaves projection_layers out;
    # solo-learn's output BatchNorm1d(2048, affine=False) is an output BatchNorm without affine.
    method = _method("simsiam", model={"projection_output_batch_norm": True}).train()
    assert method.model_config.projection_layers == 3
    layers = list(method.encoder.projection.layers)
    assert [type(m).__name__ for m in layers] == [
        "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d",
    ]  # fmt: skip
    assert layers[-1].affine is False and layers[-1].num_features == 16
    assert layers[-2].bias is None  # a BatchNorm follows: no bias (solo-learn freezes it)
    assert (method.predictor.in_dim, method.predictor.out_dim) == (16, 16)
    assert method.predictor.layers[0].out_features == 32  # model.prediction_hidden_dim
    z = method.encoder(_views()[0])[1]
    torch.testing.assert_close(z.mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(0, unbiased=False), torch.ones(16), atol=1e-3, rtol=0)
    # Without the flag the head ends in its Linear, as the model section says.
    plain = _method("simsiam")
    assert isinstance(plain.encoder.projection.layers[-1], nn.Linear)


# ---------------------------------------------------------------------------- Barlow Twins


def _barlow_by_hand(z1, z2, lambda_offdiag: float, scale_loss: float) -> torch.Tensor:
    n, d = z1.shape
    standardized = [(z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5) for z in (z1, z2)]
    c = torch.zeros(d, d)
    for i in range(d):
        for j in range(d):
            c[i, j] = (standardized[0][:, i] * standardized[1][:, j]).sum() / n
    on = sum((1 - c[i, i]) ** 2 for i in range(d))
    off = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return scale_loss * (on + lambda_offdiag * off)


@pytest.mark.parametrize("separate", [False, True])
def test_barlow_twins_is_the_cross_correlation_loss(separate: bool) -> None:
    method = _method("barlow_twins", separate_forwards=separate, scale_loss=0.1).train()
    assert (method.method_config.lambda_offdiag, method.method_config.scale_loss) == (0.0051, 0.1)
    v1, v2 = _views()
    out = method([v1, v2], step=0)
    features, z1, z2 = _projections(method, v1, v2, separate)
    torch.testing.assert_close(out.loss, _barlow_by_hand(z1, z2, 0.0051, 0.1))
    torch.testing.assert_close(out.loss, barlow_twins_loss(z1, z2, 0.0051, 0.1))
    torch.testing.assert_close(out.features, features.detach())
    assert out.label_weights is None


def test_barlow_twins_defaults_are_the_papers_and_the_head_has_three_layers() -> None:
    method = _method("barlow_twins")
    assert (method.method_config.lambda_offdiag, method.method_config.scale_loss) == (0.0051, 1.0)
    assert method.model_config.projection_layers == 3
    linears = [m for m in method.encoder.projection.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 32), (32, 32), (32, 16)]
    assert not hasattr(method, "predictor") and method.teacher is None


# -------------------------------------------------------------------------------------- VICReg


def _vicreg_by_hand(z1, z2, sim: float, std: float, cov: float) -> torch.Tensor:
    n, d = z1.shape
    invariance = ((z1 - z2) ** 2).mean()
    variance = covariance = 0.0
    for z in (z1, z2):
        centered = z - z.mean(0)
        c = centered.T @ centered / (n - 1)
        variance = variance + F.relu(1 - torch.sqrt(c.diagonal() + 1e-4)).mean() / 2
        covariance = covariance + (c**2).sum().sub((c.diagonal() ** 2).sum()) / d
    return sim * invariance + std * variance + cov * covariance


def _solo_learn_vicreg(z1, z2, sim_w: float, var_w: float, cov_w: float) -> torch.Tensor:
    """solo-learn's solo/losses/vicreg.py, re-derived: the two views' variance terms SUMMED."""
    n, d = z1.shape
    var = sum(F.relu(1 - torch.sqrt(z.var(dim=0) + 1e-4)).mean() for z in (z1, z2))
    covs = [(z - z.mean(0)).T @ (z - z.mean(0)) / (n - 1) for z in (z1, z2)]
    off = ~torch.eye(d, dtype=torch.bool)
    cov = sum(c[off].pow(2).sum() / d for c in covs)
    return sim_w * F.mse_loss(z1, z2) + var_w * var + cov_w * cov


@pytest.mark.parametrize("separate", [False, True])
def test_vicreg_is_invariance_variance_covariance(separate: bool) -> None:
    method = _method("vicreg", separate_forwards=separate).train()
    config = method.method_config
    assert (config.sim_coeff, config.std_coeff, config.cov_coeff) == (25.0, 25.0, 1.0)
    v1, v2 = _views()
    out = method([v1, v2], step=0)
    features, z1, z2 = _projections(method, v1, v2, separate)
    torch.testing.assert_close(out.loss, _vicreg_by_hand(z1, z2, 25.0, 25.0, 1.0))
    torch.testing.assert_close(out.loss, vicreg_loss(z1, z2, 25.0, 25.0, 1.0))
    torch.testing.assert_close(out.features, features.detach())
    assert out.label_weights is None and method.model_config.projection_layers == 3


def test_vicreg_recipe_std_coeff_50_is_solo_learns_var_weight_25() -> None:
    # The CIFAR recipe's std_coeff 50 reproduces solo-learn's (25, 25, 1), which sums the views'
    # variance terms where facebookresearch/vicreg (and vicreg_loss) averages them.
    recipe = load_config(CONFIG_DIR / "vicreg_cifar10.yaml").method
    assert (recipe.sim_coeff, recipe.std_coeff, recipe.cov_coeff) == (25.0, 50.0, 1.0)
    method = _method("vicreg", sim_coeff=25.0, std_coeff=50.0, cov_coeff=1.0).train()
    # Collapsed-ish projections, so the variance hinge is active.
    v1, v2 = (0.05 * v for v in _views())
    out = method([v1, v2], step=0)
    _, z1, z2 = _projections(method, v1, v2, separate=False)
    torch.testing.assert_close(out.loss, _solo_learn_vicreg(z1, z2, 25.0, 25.0, 1.0))
    assert not torch.allclose(out.loss, _solo_learn_vicreg(z1, z2, 25.0, 50.0, 1.0))


# --------------------------------------------------------------------- i-Mix, state, smoke, toy


@pytest.mark.parametrize("name", ["barlow_twins", "vicreg"])
def test_imix_is_refused_with_the_reason(name: str) -> None:
    reason = METHODS[name].imix_unsupported_reason
    assert "batch" in reason and not METHODS[name].supports_imix
    with pytest.raises(ValueError, match=r"method\.imix='mixup'.*" + name) as error:
        config_from_dict(
            tiny_tabular_config(Path("unused"), method={"name": name, "imix": "mixup"})
        )
    assert reason in str(error.value)
    config = config_from_dict(tiny_tabular_config(Path("unused"), method={"name": name}))
    config.method.imix = "cutmix"  # past the config's check: the method says it again
    backbone = create_backbone("mlp", in_features=FEATURES, width=8, num_layers=1)
    with pytest.raises(
        ValueError, match=r"method\.imix='cutmix' is defined only for methods"
    ) as error:
        METHODS[name](backbone, config.method, config.model)
    assert reason in str(error.value)


@pytest.mark.parametrize("name", ["simsiam", "barlow_twins", "vicreg"])
def test_state_dict_round_trip_gives_the_same_next_loss(name: str) -> None:
    extra = {"model": {"projection_output_batch_norm": True}} if name == "simsiam" else {}
    method = _method(name, **extra).train()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    for seed in (1, 2):  # move the weights and the BatchNorm running statistics
        optimizer.zero_grad()
        method(_views(seed=seed), step=0).loss.backward()
        optimizer.step()
    restored = _method(name, **extra)
    restored.load_state_dict(method.state_dict())
    for module in (method, restored):
        module.eval()
    views = _views(seed=9)
    torch.testing.assert_close(restored(views, step=1).loss, method(views, step=1).loss)


@pytest.mark.parametrize("name", ["simsiam", "barlow_twins", "vicreg"])
def test_runs_from_the_smoke_config_with_only_the_name_changed(
    name: str, tmp_path: Path, toy_cifar_dir: Path
) -> None:
    overrides = [
        f"method.name={name}",
        f"data.data_dir={toy_cifar_dir}",
        f"train.output_dir={tmp_path / 'run'}",
        *SMOKE_SHRINK,
    ]
    config = load_config(CONFIG_DIR / "smoke.yaml", overrides)
    assert config.data.augment == "simclr_views"  # the smoke's own views, whatever the method
    torch.manual_seed(0)
    result = run_pretrain(config)
    losses = [float(r["loss"]) for r in read_metrics(result.run_dir / "metrics.csv")]
    assert result.step == 2 and len(losses) == 2
    assert all(torch.isfinite(torch.tensor(losses)))


# (name, imix, method fields, noise std of the two views). Barlow Twins gets stronger noise: with
# the default 0.1 the two views are so alike that c is near the identity from the start.
LEARNING_CASES = [
    ("simsiam", "none", {}, 0.1),
    ("simsiam", "mixup", {"separate_forwards": True}, 0.1),
    ("barlow_twins", "none", {}, 0.5),
    ("vicreg", "none", {}, 0.1),
]
LEARNING_IDS = [f"{n}-{i}{''.join(f'-{k}' for k in extra)}" for n, i, extra, _ in LEARNING_CASES]


@pytest.mark.parametrize(("name", "imix", "extra", "noise"), LEARNING_CASES, ids=LEARNING_IDS)
def test_loss_decreases_on_tabular_toy(
    tmp_path: Path, name: str, imix: str, extra: dict, noise: float
) -> None:
    raw = tiny_tabular_config(
        tmp_path / "run",
        method={"name": name, "imix": imix, **extra},
        optimizer={"lr": 0.1},
        train={"epochs": 2, "batch_size": 32, "warmup_epochs": 0.25},
    )
    raw["data"]["augment_options"] = {"std": noise}
    result = run_pretrain(config_from_dict(raw), train_data=toy_tabular(512, FEATURES))
    losses = [float(r["loss"]) for r in read_metrics(result.run_dir / "metrics.csv")]
    assert len(losses) == 32 and result.step == 32
    early, late = sum(losses[2:8]) / 6, sum(losses[-6:]) / 6
    assert late < early, losses
