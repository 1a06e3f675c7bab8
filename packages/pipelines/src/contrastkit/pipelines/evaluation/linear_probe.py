"""Linear probe: a linear classifier trained on frozen, standardised features (SGD, L-BFGS or ridge).

Plus `label_fraction_indices`, the seeded class-stratified 1% / 10% / 100% label subsets of semi-supervised evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from contrastkit.pipelines.evaluation.inputs import check_features, check_labels, check_same_space
from contrastkit.pipelines.evaluation.knn import topk_accuracy

SOLVERS: tuple[str, ...] = ("sgd", "lbfgs", "closed_form")

# Features whose train std is below this are centred but not scaled (avoids dividing by ~0).
_MIN_STD = 1e-6
# The learning rate each solver uses when none is given (closed_form has none).
SOLVER_DEFAULT_LR: dict[str, float] = {"sgd": 0.1, "lbfgs": 1.0, "closed_form": 0.0}
_LBFGS_ITERATIONS_PER_EPOCH = 10


@dataclass
class LinearProbeResult:
    """Outcome of `train_linear_probe`.

    Attributes:
        top1, top5: test accuracy in percent (0..100) of the final classifier.
        history: one dict per epoch: epoch (1-based), train_loss, val_loss, val_top1,
            val_top5 (val = the test features given). Losses are cross-entropy for
            "sgd"/"lbfgs" and mean squared error to one-hot targets for "closed_form"
            (whose history has the single entry epoch 1).
        classifier: the trained nn.Linear(D, C), on the features' device; it expects
            standardised features, see `feature_mean` / `feature_std` and `logits`.
        feature_mean, feature_std: (D,) float32 train statistics used to standardise.
        solver: which solver trained it.
    """

    top1: float
    top5: float
    history: list[dict[str, float]]
    classifier: nn.Linear
    feature_mean: Tensor
    feature_std: Tensor
    solver: str = field(default="sgd")

    def standardize(self, features: Tensor) -> Tensor:
        """(N, D) features -> (N, D) float32 standardised with the train statistics."""
        return (features.float() - self.feature_mean) / self.feature_std

    @torch.no_grad()
    def logits(self, features: Tensor) -> Tensor:
        """(N, D) raw features -> (N, C) float32 class logits (standardise, then the linear layer)."""
        return self.classifier(self.standardize(features))


def _check_probe_inputs(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
) -> None:
    check_features("train_features", train_features)
    check_features("test_features", test_features)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if train_features.shape[0] == 0 or test_features.shape[0] == 0:
        raise ValueError(
            f"train_features and test_features must be non-empty, got shapes "
            f"{tuple(train_features.shape)} and {tuple(test_features.shape)}"
        )
    check_same_space("train_features", train_features, "test_features", test_features)
    check_labels("train_labels", train_labels, train_features.shape[0], num_classes)
    check_labels("test_labels", test_labels, test_features.shape[0], num_classes)


def _positive_number(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        allowed = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")


def _positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@torch.no_grad()
def _evaluate(
    classifier: nn.Linear, features: Tensor, labels: Tensor, loss_kind: str
) -> dict[str, float]:
    logits = classifier(features)
    if loss_kind == "mse":
        targets = F.one_hot(labels, logits.shape[1]).float()
        loss = F.mse_loss(logits, targets, reduction="sum").item() / features.shape[0]
    else:
        loss = F.cross_entropy(logits, labels).item()
    accuracy = topk_accuracy(logits, labels)
    return {"loss": loss, "top1": accuracy["top1"], "top5": accuracy["top5"]}


def _history_row(epoch: int, train_loss: float, val: dict[str, float]) -> dict[str, float]:
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val["loss"],
        "val_top1": val["top1"],
        "val_top5": val["top5"],
    }


def standardization(features: Tensor) -> tuple[Tensor, Tensor]:
    """(D,) float32 mean and std of (N, D) train features; dimensions with std < 1e-6 are only centred."""
    mean = features.float().mean(dim=0)
    std = features.float().std(dim=0, unbiased=False)
    return mean, torch.where(std < _MIN_STD, torch.ones_like(std), std)


@torch.no_grad()
def init_classifier_(linear: nn.Linear, seed: int) -> nn.Linear:
    """Seeded N(0, 0.01^2) weights and zero bias (MoCo's lincls init), in place.

    Drawn from a private CPU generator, so no global RNG is touched and every device gets the
    same start.
    """
    generator = torch.Generator().manual_seed(seed)
    out_features, in_features = linear.weight.shape
    linear.weight.copy_(torch.randn(out_features, in_features, generator=generator) * 0.01)
    linear.bias.zero_()
    return linear


def _new_classifier(dim: int, num_classes: int, seed: int, device: torch.device) -> nn.Linear:
    return init_classifier_(nn.Linear(dim, num_classes), seed).to(device)


def _train_sgd(
    classifier: nn.Linear,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    seed: int,
    progress: bool,
) -> list[dict[str, float]]:
    optimizer = torch.optim.SGD(
        classifier.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay
    )
    steps_per_epoch = math.ceil(train_x.shape[0] / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(seed)
    history = []
    bar = tqdm(range(1, epochs + 1), desc="linear probe", disable=not progress, leave=False)
    for epoch in bar:
        # Permutation drawn on the CPU so it is identical on every device.
        order = torch.randperm(train_x.shape[0], generator=generator).to(train_x.device)
        total_loss = torch.zeros((), device=train_x.device)
        for start in range(0, train_x.shape[0], batch_size):
            batch = order[start : start + batch_size]
            loss = F.cross_entropy(classifier(train_x[batch]), train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.detach() * batch.shape[0]
        val = _evaluate(classifier, test_x, test_y, "ce")
        history.append(_history_row(epoch, total_loss.item() / train_x.shape[0], val))
        bar.set_postfix(loss=f"{history[-1]['train_loss']:.3f}", val_top1=f"{val['top1']:.1f}")
    return history


def _train_lbfgs(
    classifier: nn.Linear,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    progress: bool,
) -> list[dict[str, float]]:
    # One "epoch" = one optimizer.step() of up to _LBFGS_ITERATIONS_PER_EPOCH full-batch
    # iterations (the curvature memory carries over between steps). Not one iteration per
    # step: torch's LBFGS stalls with max_iter=1 (its step length collapses to 0).
    optimizer = torch.optim.LBFGS(
        classifier.parameters(),
        lr=lr,
        max_iter=_LBFGS_ITERATIONS_PER_EPOCH,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def objective() -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(classifier(train_x), train_y)
        # L2 on the weight only (not the bias), same scale as SGD's weight_decay: wd/2 * ||W||^2.
        loss = loss + 0.5 * weight_decay * classifier.weight.pow(2).sum()
        loss.backward()
        return loss

    history = []
    bar = tqdm(range(1, epochs + 1), desc="linear probe", disable=not progress, leave=False)
    for epoch in bar:
        optimizer.step(objective)
        with torch.no_grad():
            train_loss = F.cross_entropy(classifier(train_x), train_y).item()
        val = _evaluate(classifier, test_x, test_y, "ce")
        history.append(_history_row(epoch, train_loss, val))
        bar.set_postfix(loss=f"{train_loss:.3f}", val_top1=f"{val['top1']:.1f}")
    return history


@torch.no_grad()
def _fit_ridge(
    classifier: nn.Linear, train_x: Tensor, train_y: Tensor, num_classes: int, weight_decay: float
) -> None:
    # Minimises 1/(2N) ||X W^T + b - Y||^2 + wd/2 ||W||^2 with Y one-hot. X is centred on the
    # train set, so the unpenalised bias is the class frequency and W solves
    # (X^T X + N wd I) W^T = X^T (Y - mean Y). float64 throughout; the D x D system is solved
    # on the CPU by rank-revealing least squares (gelsy), which also gives the minimum-norm
    # solution when it is singular (wd = 0 with N <= D, or constant features).
    x = train_x.double()
    targets = F.one_hot(train_y, num_classes).double()
    class_frequency = targets.mean(dim=0)
    gram = x.T @ x
    gram.diagonal().add_(x.shape[0] * weight_decay)
    rhs = x.T @ (targets - class_frequency)
    weight = torch.linalg.lstsq(gram.cpu(), rhs.cpu(), driver="gelsy").solution
    classifier.weight.copy_(weight.T.float())
    classifier.bias.copy_(class_frequency.float())


def train_linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    *,
    epochs: int = 100,
    lr: float | None = None,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    solver: str = "sgd",
    seed: int = 0,
    progress: bool = False,
) -> LinearProbeResult:
    """Train nn.Linear(D, C) on frozen features and report its test top-1 / top-5.

    Features are standardised first with the mean and std of the TRAIN features (per
    dimension; dimensions with std < 1e-6 are only centred), so one learning rate suits
    every backbone; the statistics are kept in the result (`result.logits(raw)` applies them).

    Solvers:
        "sgd": mini-batch SGD, momentum 0.9, cosine LR from `lr` to 0 over all steps, a
            seeded shuffle each epoch, cross-entropy; `weight_decay` is SGD's (on W and b).
        "lbfgs": full-batch torch.optim.LBFGS (strong-Wolfe line search) on cross-entropy
            + weight_decay/2 * ||W||^2; an epoch is up to 10 iterations (fewer once converged).
        "closed_form": ridge regression to one-hot targets with penalty weight_decay/2 *
            ||W||^2 (bias free), one float64 solve; `epochs`, `lr`, `batch_size` unused. Fast,
            usually a few points below the other two; weight_decay=0 gives the minimum-norm
            least-squares fit.

    Args:
        train_features: (N, D) float features; train_labels: (N,) int classes in [0, C).
        test_features: (Nt, D) float features on the same device; test_labels: (Nt,).
        num_classes: C >= 2.
        epochs: SGD epochs or L-BFGS rounds of 10 iterations (>= 1).
        lr: learning rate; None means 0.1 for "sgd", 1.0 for "lbfgs".
        batch_size: SGD mini-batch size.
        weight_decay: L2 strength (>= 0), meaning per solver as above.
        solver: one of SOLVERS.
        seed: seeds the weight init and the SGD shuffles (private generators).
        progress: show a tqdm bar over epochs.

    Returns:
        LinearProbeResult (top1, top5, per-epoch history, classifier, standardisation stats).
    """
    _check_probe_inputs(train_features, train_labels, test_features, test_labels, num_classes)
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    _positive_int("epochs", epochs)
    _positive_int("batch_size", batch_size)
    _positive_number("weight_decay", weight_decay, allow_zero=True)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if lr is None:
        lr = SOLVER_DEFAULT_LR[solver]
    elif solver != "closed_form":
        _positive_number("lr", lr)
    device = train_features.device
    mean, std = standardization(train_features)
    train_x = (train_features.float() - mean) / std
    test_x = (test_features.float() - mean) / std
    train_y = train_labels.to(device=device, dtype=torch.int64)
    test_y = test_labels.to(device=device, dtype=torch.int64)

    classifier = _new_classifier(train_x.shape[1], num_classes, seed, device)
    with torch.enable_grad():
        if solver == "sgd":
            history = _train_sgd(
                classifier, train_x, train_y, test_x, test_y, epochs=epochs, lr=lr,
                batch_size=batch_size, weight_decay=weight_decay, seed=seed, progress=progress,
            )  # fmt: skip
        elif solver == "lbfgs":
            history = _train_lbfgs(
                classifier, train_x, train_y, test_x, test_y, epochs=epochs, lr=lr,
                weight_decay=weight_decay, progress=progress,
            )  # fmt: skip
        else:
            _fit_ridge(classifier, train_x, train_y, num_classes, weight_decay)
            train_loss = _evaluate(classifier, train_x, train_y, "mse")["loss"]
            history = [_history_row(1, train_loss, _evaluate(classifier, test_x, test_y, "mse"))]

    final = history[-1]
    return LinearProbeResult(
        top1=final["val_top1"],
        top5=final["val_top5"],
        history=history,
        classifier=classifier,
        feature_mean=mean,
        feature_std=std,
        solver=solver,
    )


def label_fraction_indices(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Seeded class-stratified subset: from every class keep round(fraction * its size) samples.

    The semi-supervised 1% / 10% protocol (SimCLR, i-Mix): each class keeps the same share,
    at least one sample, so class proportions are preserved (exactly equal per class when
    the classes are). fraction=1.0 returns every index. The draw uses a CPU torch.Generator
    seeded with `seed` and visits classes in increasing order, so it is the same on every
    machine and device.

    Args:
        labels: (N,) integer class labels (any non-negative values).
        fraction: share to keep, 0 < fraction <= 1.
        seed: the draw's seed.

    Returns:
        (M,) int64 indices into `labels`, sorted ascending, on the labels' device.
    """
    if not isinstance(labels, Tensor) or labels.ndim != 1:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a 1-D tensor of class indices, got {shape}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    ok = isinstance(fraction, int | float) and not isinstance(fraction, bool)
    if not ok or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")

    if fraction == 1:
        return torch.arange(labels.shape[0], device=labels.device)
    cpu_labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in torch.unique(cpu_labels).tolist():
        members = (cpu_labels == cls).nonzero().flatten()
        keep = max(1, round(fraction * members.shape[0]))
        chosen.append(members[torch.randperm(members.shape[0], generator=generator)[:keep]])
    return torch.cat(chosen).sort().values.to(labels.device)
