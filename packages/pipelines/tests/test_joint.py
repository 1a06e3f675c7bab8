"""Joint training (CE on views[0] + ssl_weight x a pretrain method's loss) against independent
computations: a hand-written supervised loop, the method's own loss, a validation pass by hand on
the saved checkpoint; exact resume after SIGTERM; config errors; outputs; probing a joint run."""

from __future__ import annotations

import copy
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from matplotlib.image import imread
from pretrain_helpers import (
    CONFIG_DIR,
    REPO_ROOT,
    SHARED_DATA,
    TOY_CLASSES,
    signal_driver,
    tiny_image_config,
    tiny_tabular_config,
    toy_tabular,
    write_yaml,
)
from shared_data import require_shared_data

from contrastkit.augment import dataset_normalization, make_views
from contrastkit.backbones import LinearClassifier, create_backbone
from contrastkit.pipelines import probe
from contrastkit.pipelines.checkpoint import list_checkpoints, read_meta, resolve_checkpoint
from contrastkit.pipelines.config import (
    JointTrainingConfig,
    config_from_dict,
    load_config,
)
from contrastkit.pipelines.data import epoch_permutation
from contrastkit.pipelines.evaluation.pretrained import PretrainedCheckpoint
from contrastkit.pipelines.evaluation.report import report_written_by
from contrastkit.pipelines.evaluation.results import read_results
from contrastkit.pipelines.joint import JOINT_METRIC_COLUMNS, JointTask, main, run_joint
from contrastkit.pipelines.joint_model import JointModel
from contrastkit.pipelines.methods import build_method
from contrastkit.pipelines.metrics import read_metrics

JOINT_SCRIPT = REPO_ROOT / "packages" / "pipelines" / "joint.py"
SEED = 0
STEPS_PER_EPOCH = 5  # 80 toy train images / batch 16
CIFAR_CLASSES = 10  # the toy CIFAR-10 uses labels 0-3 of CIFAR-10's 10 classes
# Per-step columns that must not depend on wall time (images_per_s, elapsed_s do).
LOGGED = tuple(c for c in JOINT_METRIC_COLUMNS if c not in ("images_per_s", "elapsed_s"))

JOINT_SIGNAL_DRIVER = signal_driver("joint")


def joint_config(output_dir: Path, data_dir: Path, *, ssl_weight: float, **sections: dict) -> dict:
    """A seconds-long joint run on the toy CIFAR at its own 32x32 size (no resize anywhere)."""
    method = sections.pop("method", {"name": "isd", "queue_size": 48})
    data = {"image_size": 32, "augment": "isd_views", **sections.pop("data", {})}
    train = {"knn_every": 0, **sections.pop("train", {})}
    raw = tiny_image_config(output_dir, data_dir, method=method, data=data, train=train, **sections)
    raw["joint"] = {"ssl_weight": ssl_weight, **raw.get("joint", {})}
    return raw


def toy_split(data_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The toy CIFAR npz files read by hand: uint8 (N, 3, 32, 32) images and int64 labels."""
    names = (
        [f"cifar10_train_{i}.npz" for i in range(1, 6)]
        if split == "train"
        else ["cifar10_test.npz"]
    )
    arrays = [np.load(data_dir / name) for name in names]
    x = np.concatenate([a["x"] for a in arrays])
    y = np.concatenate([a["y"] for a in arrays])
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long()


def normalize_by_hand(images: torch.Tensor) -> torch.Tensor:
    mean, std = dataset_normalization("cifar10")
    x = images.float() / 255.0
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def run_script(args: list[str], *, signal_at_step: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ, CK_TEST_SIGNAL_AT_STEP=str(signal_at_step), PYTHONUNBUFFERED="1")
    command = (
        [sys.executable, "-c", JOINT_SIGNAL_DRIVER]
        if signal_at_step
        else [sys.executable, str(JOINT_SCRIPT)]
    )
    return subprocess.run(
        command + args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def rows(
    run_dir: Path, name: str = "metrics.csv", columns: tuple[str, ...] = LOGGED
) -> list[tuple]:
    return [tuple(row.get(c, "") for c in columns) for row in read_metrics(run_dir / name)]


@pytest.fixture(scope="module")
def isd_run(tmp_path_factory: pytest.TempPathFactory, toy_cifar_dir: Path) -> Path:
    """One finished joint ISD run (2 epochs, 10 steps, every step logged), shared by several tests."""
    root = tmp_path_factory.mktemp("joint_isd")
    raw = joint_config(root / "run", toy_cifar_dir, ssl_weight=0.5)
    config = config_from_dict(raw, JointTrainingConfig)
    result = run_joint(config)
    assert (result.step, result.epoch, result.stopped_by) == (10, 2, None)
    return root / "run"


# ------------------------------------------------------------------ lambda = 0 is supervised training


def test_ssl_weight_zero_equals_a_hand_written_supervised_loop(
    tmp_path: Path, toy_cifar_dir: Path
) -> None:
    """The fixed command (`python packages/pipelines/joint.py`) with joint.ssl_weight=0 against a
    plain loop: same seed, data order, augmentation draws (views[0] of the isd recipe), SGD."""
    raw = joint_config(
        tmp_path / "run", toy_cifar_dir, ssl_weight=0.0, model={"channels_last": False}
    )
    config_file = write_yaml(tmp_path / "c.yaml", raw)
    done = run_script(["--config", str(config_file), "train.progress_bar=true"])
    assert done.returncode == 0, done.stderr
    # The progress bar names the run what it is: supervised, not the method it borrows views from.
    assert "joint supervised" in done.stderr and "joint isd" not in done.stderr
    logged = read_metrics(tmp_path / "run" / "metrics.csv")
    assert [r["train_ssl"] for r in logged] == [""] * 10  # no SSL term was computed

    cfg = config_from_dict(raw, JointTrainingConfig)
    opt, batch = cfg.optimizer, cfg.train.batch_size
    torch.manual_seed(SEED)
    backbone = create_backbone("timm:test_resnet")
    classifier = LinearClassifier(backbone.num_features, CIFAR_CLASSES)
    params = list(backbone.parameters()) + list(classifier.parameters())
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    sgd = torch.optim.SGD(
        [
            {"params": decay, "weight_decay": opt.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=0.0,
        momentum=opt.momentum,
    )
    peak = opt.lr * batch / 256
    total, warmup = 10, round(cfg.train.warmup_epochs * STEPS_PER_EPOCH)
    augment = make_views("isd_views", 32, "cifar10", seed=SEED * 100_003 + 10_000)
    images, labels = toy_split(toy_cifar_dir, "train")
    losses, step = [], 0
    for epoch in range(2):
        order = epoch_permutation(len(labels), SEED, epoch)
        for t in range(STEPS_PER_EPOCH):
            index = order[t * batch : (t + 1) * batch]
            weak = augment(images[index])[0]
            if step < warmup:
                factor = (step + 1) / warmup
            else:
                factor = (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) / 2
            for group in sgd.param_groups:
                group["lr"] = peak * factor
            loss = F.cross_entropy(classifier(backbone(weak)), labels[index])
            sgd.zero_grad()
            loss.backward()
            sgd.step()
            losses.append(loss.item())
            step += 1

    torch.testing.assert_close(
        torch.tensor([float(r["loss"]) for r in logged]), torch.tensor(losses), rtol=1e-6, atol=1e-7
    )
    assert [float(r["train_ce"]) for r in logged] == [float(r["loss"]) for r in logged]
    checkpoint = resolve_checkpoint(tmp_path / "run")
    saved = torch.load(checkpoint / "backbone.pt", weights_only=True)
    for name, value in backbone.state_dict().items():
        torch.testing.assert_close(saved[name], value, rtol=1e-5, atol=1e-6, msg=name)
    saved_head = torch.load(checkpoint / "classifier.pt", weights_only=True)
    for name, value in classifier.state_dict().items():
        torch.testing.assert_close(saved_head[name], value, rtol=1e-5, atol=1e-6, msg=name)
    state = torch.load(checkpoint / "training_state.pt", weights_only=True)["model"]
    assert not any(key.startswith("method.") for key in state)  # no SSL heads were even built
    meta = read_meta(checkpoint)
    assert (meta["task"], meta["ssl_weight"]) == ("joint", 0.0)


# ------------------------------------------------------------------ lambda > 0: the parts


def _toy_batch(seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    views = [torch.randn(8, 3, 8, 8, generator=generator) for _ in range(2)]
    return views, torch.arange(8) % TOY_CLASSES


@pytest.mark.parametrize(("method", "smoothing"), [("isd", 0.0), ("simclr", 0.0), ("byol", 0.1)])
def test_loss_is_cross_entropy_plus_weighted_method_loss(
    tmp_path: Path, toy_cifar_dir: Path, method: str, smoothing: float
) -> None:
    raw = joint_config(
        tmp_path, toy_cifar_dir, ssl_weight=0.7, method={"name": method, "queue_size": 48}
    )
    raw["joint"]["label_smoothing"] = smoothing
    config = config_from_dict(raw, JointTrainingConfig)
    torch.manual_seed(3)
    backbone = create_backbone("timm:test_resnet")
    model = JointModel(
        backbone,
        LinearClassifier(backbone.num_features, TOY_CLASSES),
        build_method(config, backbone),
        ssl_weight=0.7,
        label_smoothing=smoothing,
    )
    reference = copy.deepcopy(model)  # before the forward moves BN statistics and the queue
    views, labels = _toy_batch(1)
    out = model(views, labels, step=3)

    ssl = reference.method(views, step=3).loss  # the method's own loss on the same views
    logits = reference.classifier(reference.backbone(views[0]))  # views[0]: ISD's weak view
    log_p = F.log_softmax(logits, dim=1)
    nll = -log_p[torch.arange(8), labels]
    ce = ((1 - smoothing) * nll - smoothing * log_p.mean(dim=1)).mean()
    torch.testing.assert_close(out.ssl, ssl)
    torch.testing.assert_close(out.ce, ce)
    torch.testing.assert_close(out.loss, ce + 0.7 * ssl)
    assert float(out.correct) == (logits.argmax(1) == labels).float().mean().item()
    logged = out.logged()
    assert list(logged) == ["loss", "train_ce", "train_ssl", "train_top1"]
    assert float(logged["train_top1"]) == pytest.approx(100 * float(out.correct))

    # The cross-entropy trains the backbone (no detach), and the gradients are those of the parts.
    parameters = list(model.backbone.parameters())
    grads = torch.autograd.grad(out.loss, parameters, retain_graph=True)
    expected = torch.autograd.grad(ce + 0.7 * ssl, list(reference.backbone.parameters()))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)
    ce_grads = torch.autograd.grad(out.ce, parameters, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in ce_grads)


def test_joint_training_learns_a_tabular_toy(tmp_path: Path) -> None:
    """CE + 0.5 x SimCLR on 4 Gaussian clusters: validation accuracy far above chance (25%)."""
    raw = tiny_tabular_config(tmp_path / "run", optimizer={"name": "sgd", "lr": 0.5})
    raw["train"]["epochs"] = 4
    raw["joint"] = {"ssl_weight": 0.5, "eval_every": 2}
    config = config_from_dict(raw, JointTrainingConfig)
    train, test = toy_tabular(256, seed=0), toy_tabular(128, seed=0)
    run_joint(config, train_data=train, test_data=test)
    history = read_metrics(tmp_path / "run" / "history.csv")
    assert [h["epoch"] for h in history] == ["1", "2", "3", "4"]
    assert [h["val_top1"] != "" for h in history] == [False, True, False, True]  # eval_every 2
    assert float(history[-1]["val_top1"]) > 90.0
    assert float(history[-1]["train_top1"]) > 80.0


# ------------------------------------------------------------------ what is logged


def test_logged_accuracies_match_a_recomputation(isd_run: Path, toy_cifar_dir: Path) -> None:
    steps = read_metrics(isd_run / "metrics.csv")
    history = read_metrics(isd_run / "history.csv")
    assert len(steps) == 10 and [h["epoch"] for h in history] == ["1", "2"]
    for epoch, record in enumerate(history, start=1):
        of_epoch = steps[(epoch - 1) * STEPS_PER_EPOCH : epoch * STEPS_PER_EPOCH]
        for column, key in (("train_top1", "train_top1"), ("loss", "train_loss"),
                            ("train_ce", "train_ce"), ("train_ssl", "train_ssl")):  # fmt: skip
            mean = sum(float(r[column]) for r in of_epoch) / STEPS_PER_EPOCH
            assert float(record[key]) == pytest.approx(mean, rel=1e-5), (epoch, key)
        # Epoch-end rows carry the validation numbers the history holds.
        for key in ("val_loss", "val_top1", "val_top5"):
            assert of_epoch[-1][key] == record[key]
            assert all(r[key] == "" for r in of_epoch[:-1])
        total = float(record["train_ce"]) + 0.5 * float(record["train_ssl"])
        assert float(record["train_loss"]) == pytest.approx(total, rel=1e-5)

    # Validation by hand on the saved checkpoint: backbone.pt + classifier.pt on the test split.
    checkpoint = resolve_checkpoint(isd_run)
    backbone = create_backbone("timm:test_resnet")
    backbone.load_state_dict(torch.load(checkpoint / "backbone.pt", weights_only=True))
    classifier = LinearClassifier(backbone.num_features, CIFAR_CLASSES)
    classifier.load_state_dict(torch.load(checkpoint / "classifier.pt", weights_only=True))
    images, labels = toy_split(toy_cifar_dir, "test")
    with torch.no_grad():
        logits = classifier(backbone.eval()(normalize_by_hand(images)))
    top1 = 100.0 * (logits.argmax(1) == labels).float().mean().item()
    last = history[-1]
    assert float(last["val_top1"]) == pytest.approx(top1, abs=1e-4)
    top5 = 100.0 * (logits.topk(5).indices == labels[:, None]).any(1).float().mean().item()
    assert float(last["val_top5"]) == pytest.approx(top5, abs=1e-4)
    assert float(last["val_loss"]) == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-4
    )
    result = read_results(isd_run / "results.csv")
    assert len(result) == 1
    assert (result[0]["method"], result[0]["mode"], result[0]["epochs"]) == ("isd", "joint", "2")
    assert float(result[0]["linear_top1"]) == pytest.approx(top1, abs=1e-4)


def test_pictures_report_and_checkpoint_files(isd_run: Path) -> None:
    for name in ("joint_curves.png", "loss_terms.png", "curves.png"):
        image = imread(isd_run / name)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0, name
    report = (isd_run / "report.md").read_text()
    # The peak lr the schedule reached: lr x global batch / 256 = 0.05 x (16 x 1 process) / 256,
    # which is also the largest lr metrics.csv logged (warm-up ends at step 2 of 10).
    peak = 0.05 * 16 / 256
    assert f"lr 0.05 -> peak {peak:g} (scaled by batch 16/256)" in report
    assert max(float(r["lr"]) for r in read_metrics(isd_run / "metrics.csv")) == pytest.approx(peak)
    assert "scaled: true" not in report
    assert report_written_by(isd_run / "report.md") == "contrastkit-joint"
    for needle in ("](joint_curves.png)", "](loss_terms.png)", "](curves.png)", "## Results",
                   "## Per-epoch history", "## Model", "+ linear classifier", "isd projection head",
                   "isd predictor", "0.5 x isd loss"):  # fmt: skip
        assert needle in report, needle
    assert report.count("| Layer | Output shape | Parameters |") == 3
    checkpoint = resolve_checkpoint(isd_run)
    assert {"config.yaml", "backbone.pt", "meta.json", "classifier.pt"} <= {
        p.name for p in checkpoint.iterdir()
    }
    saved = yaml.safe_load((checkpoint / "config.yaml").read_text())
    assert saved["joint"] == {"ssl_weight": 0.5, "label_smoothing": 0.0, "eval_every": 1}
    assert read_meta(checkpoint)["method"] == "isd"


def test_a_joint_checkpoint_is_probed(isd_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "probe"
    argv = ["--checkpoint", str(isd_run), "--output-dir", str(out), "--epochs", "2",
            "--knn-k", "5", "--no-tsne", "--no-nn-grid", "--no-progress"]  # fmt: skip
    assert probe.main(argv) == 0
    row = read_results(out / "results.csv")[-1]
    assert (row["method"], row["backbone"], row["step"]) == ("isd", "timm:test_resnet", "10")
    assert 0.0 <= float(row["linear_top1"]) <= 100.0


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every matplotlib Figure the plots package saves, kept for inspection."""
    from contrastkit.pipelines.plots import _figure

    saved: list = []
    real_save = _figure.save_png

    def keep(figure, out_png):
        saved.append(figure)
        return real_save(figure, out_png)

    monkeypatch.setattr(_figure, "save_png", keep)
    return saved


def _epoch_records(val_loss: list[float]) -> list[dict]:
    return [
        {"epoch": e, "train_loss": 3.0 / e, "train_ce": 2.0 / e, "train_ssl": 1.0 / e,
         "train_top1": 20.0 + e, "val_loss": loss, "val_top1": 30.0 + e, "val_top5": 80.0}
        for e, loss in enumerate(val_loss, start=1)
    ]  # fmt: skip


@pytest.mark.parametrize("ssl_weight", [0.0, 0.5])
def test_joint_pictures_label_the_run_show_chance_and_clip_an_outlier(
    tmp_path: Path, toy_cifar_dir: Path, figures: list, ssl_weight: float
) -> None:
    """joint_curves.png (and loss_terms.png) read back as figures: the lambda = 0 run is titled
    supervised, top-1 shows chance = 100 / 10 classes on 0-100, an epoch-1 20.7 is clipped."""
    from types import SimpleNamespace

    from contrastkit.pipelines.joint_report import _draw

    config = config_from_dict(
        joint_config(tmp_path, toy_cifar_dir, ssl_weight=ssl_weight), JointTrainingConfig
    )
    classifier = LinearClassifier(8, CIFAR_CLASSES)
    end = SimpleNamespace(
        config=config, run_dir=tmp_path, model=SimpleNamespace(classifier=classifier)
    )
    _draw(end, _epoch_records([20.7, 1.5, 1.3, 1.2]), has_ssl=ssl_weight > 0)  # type: ignore[arg-type]
    curves = figures[0]
    expected = "Supervised baseline" if ssl_weight == 0 else "Joint training"
    assert curves._suptitle.get_text().startswith(f"{expected}: train and validation")
    accuracy, cross_entropy = curves.axes
    (chance,) = [line for line in accuracy.get_lines() if line.get_gid() == "chance"]
    assert chance.get_ydata()[0] == 10.0 and accuracy.get_ylim() == (0.0, 100.0)
    assert cross_entropy.get_ylim()[1] < 2.0 and "clipped" in cross_entropy.get_title()
    assert curves.axes[0].get_xlim() == curves.axes[1].get_xlim()
    assert len(figures) == (2 if ssl_weight > 0 else 1)  # loss terms only with an SSL term
    assert (tmp_path / "joint_curves.png").is_file()
    assert (tmp_path / "loss_terms.png").is_file() == (ssl_weight > 0)


@pytest.mark.parametrize(
    ("scale_lr", "global_batch", "text"),
    [
        (True, 512, "lr 0.05 -> peak 0.1 (scaled by batch 512/256)"),  # 0.05 x 512 / 256
        (True, 64, "lr 0.05 -> peak 0.0125 (scaled by batch 64/256)"),
        (False, 512, "lr 0.05 (not scaled by the batch)"),
    ],
)
def test_the_report_states_the_peak_lr(scale_lr: bool, global_batch: int, text: str) -> None:
    from contrastkit.pipelines.config import OptimizerConfig
    from contrastkit.pipelines.joint_report import peak_lr_text

    assert peak_lr_text(OptimizerConfig(lr=0.05, scale_lr=scale_lr), global_batch) == text


@pytest.mark.parametrize(("ssl_weight", "label"), [(0.0, "joint supervised"), (0.5, "joint isd")])
def test_progress_label_names_a_lambda_zero_run_supervised(
    tmp_path: Path, toy_cifar_dir: Path, ssl_weight: float, label: str
) -> None:
    config = config_from_dict(
        joint_config(tmp_path, toy_cifar_dir, ssl_weight=ssl_weight), JointTrainingConfig
    )
    assert JointTask().progress_label(config) == label


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"task": "joint", "ssl_weight": 0.0}, "supervised"),
        ({"task": "joint", "ssl_weight": 0.5}, "isd"),
        ({"task": "pretrain"}, "isd"),
    ],
)
def test_probe_names_a_lambda_zero_joint_run_supervised(meta: dict, expected: str) -> None:
    """A lambda = 0 joint run keeps method.name (for its views) but trained no SSL term."""
    checkpoint = PretrainedCheckpoint(Path("ck"), {"method": {"name": "isd"}}, meta)
    assert checkpoint.method == expected


# ------------------------------------------------------------------ resume


def test_sigterm_then_resume_is_bit_identical(
    isd_run: Path, tmp_path: Path, toy_cifar_dir: Path
) -> None:
    raw = yaml.safe_load((isd_run / "config.yaml").read_text())
    config = write_yaml(tmp_path / "c.yaml", raw)
    run_dir = tmp_path / "interrupted"
    args = ["--config", str(config), "--output-dir", str(run_dir)]
    stopped = run_script(args, signal_at_step=7)
    assert stopped.returncode == 0, stopped.stderr  # stopped with a checkpoint: nothing lost
    assert "contrastkit-joint: stopped by SIGTERM at step 8" in stopped.stderr
    assert f"--resume latest --output-dir {run_dir}" in stopped.stderr
    meta = read_meta(list_checkpoints(run_dir)[-1])
    assert (meta["step"], meta["epoch"], meta["batch_in_epoch"]) == (8, 1, 3)
    assert len(read_metrics(run_dir / "history.csv")) == 1

    assert main([*args, "--resume", "latest"]) == 0
    assert rows(run_dir) == rows(isd_run)
    assert (run_dir / "history.csv").read_text() == (isd_run / "history.csv").read_text()


def test_resume_from_a_checkpoint_between_logged_rows(tmp_path: Path, toy_cifar_dir: Path) -> None:
    """A periodic checkpoint (step 4) inside a logging window (rows at steps 3, 5, 6, 9, 10) and
    inside epoch 1: the resumed run's rows and epoch means still equal the uninterrupted run's."""
    raw = joint_config(tmp_path / "reference", toy_cifar_dir, ssl_weight=1.0,
                       train={"log_every": 3, "checkpoint_every": 4, "keep_last": 10})  # fmt: skip
    reference = tmp_path / "reference"
    run_joint(config_from_dict(raw, JointTrainingConfig))
    assert [r["step"] for r in read_metrics(reference / "metrics.csv")] == [
        "3",
        "5",
        "6",
        "9",
        "10",
    ]

    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed)
    for folder in list_checkpoints(resumed):
        if read_meta(folder)["step"] > 4:
            shutil.rmtree(folder)
    raw["train"]["output_dir"] = str(resumed)
    run_joint(config_from_dict(raw, JointTrainingConfig), resume="latest")
    assert rows(resumed) == rows(reference)
    assert (resumed / "history.csv").read_text() == (reference / "history.csv").read_text()


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("joint.ssl_weight=-0.5", r"joint.ssl_weight must be >= 0.0, got -0.5"),
        ("joint.ssl_weight=abc", r"joint.ssl_weight must be a float, got 'abc'"),
        ("joint.label_smoothing=1.0", r"joint.label_smoothing must be in \[0, 1\), got 1.0"),
        ("joint.eval_every=0", r"joint.eval_every must be >= 1, got 0"),
        ("joint.lambda=1", r"unknown key 'lambda' in section 'joint'.*'ssl_weight'"),
        ("train.online_linear=true", r"train.online_linear=true.*use train.online_linear=false"),
    ],
)
def test_bad_joint_config_values_are_refused(override: str, message: str) -> None:
    path = CONFIG_DIR / "joint_isd_myresnet_cifar10.yaml"
    with pytest.raises(ValueError, match=message):
        load_config(path, [override], JointTrainingConfig)


def test_bad_inputs_give_clear_errors(tmp_path: Path, toy_cifar_dir: Path, capsys) -> None:
    with pytest.raises(ValueError, match="unknown key 'joint' in the config's top level"):
        config_from_dict({"joint": {"ssl_weight": 1.0}})  # a pretrain config has no joint section
    pretrain_config = config_from_dict(tiny_image_config(tmp_path, toy_cifar_dir))
    with pytest.raises(ValueError, match="needs a JointTrainingConfig"):
        run_joint(pretrain_config)  # type: ignore[arg-type]
    backbone = create_backbone("timm:test_resnet")
    with pytest.raises(ValueError, match=r"ssl_weight=0\.5 weights a self-supervised loss"):
        JointModel(backbone, LinearClassifier(backbone.num_features, 4), None, ssl_weight=0.5)
    with pytest.raises(
        ValueError, match=r"label_smoothing must be a number in \[0, 1\), got '0.1'"
    ):
        JointModel(backbone, LinearClassifier(backbone.num_features, 4), label_smoothing="0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="classifier takes 7 features but the backbone gives"):
        JointModel(backbone, LinearClassifier(7, 4), None, ssl_weight=0.0)
    model = JointModel(backbone, LinearClassifier(backbone.num_features, 4), None, ssl_weight=0.0)
    views, _ = _toy_batch(0)
    with pytest.raises(ValueError, match=r"labels must have shape \(8,\).*got \(7,\)"):
        model(views, torch.zeros(7, dtype=torch.long), step=0)
    # The command line: a bad value exits with 2 and names it; nothing is written.
    raw = joint_config(tmp_path / "run", toy_cifar_dir, ssl_weight=1.0)
    config = write_yaml(tmp_path / "c.yaml", raw)
    assert main(["--config", str(config), "joint.eval_every=-1"]) == 2
    assert (
        "contrastkit-joint: error: joint.eval_every must be >= 1, got -1" in capsys.readouterr().err
    )
    missing_test = tmp_path / "no_test"
    shutil.copytree(toy_cifar_dir, missing_test)
    (missing_test / "cifar10_test.npz").unlink()
    assert main(["--config", str(config), "--data-dir", str(missing_test)]) == 2
    assert "validates on the test split" in capsys.readouterr().err
    # The pre-flight check may create the output folder; nothing is written into it.
    run_dir = tmp_path / "run"
    assert not run_dir.exists() or sorted(p.name for p in run_dir.iterdir()) == []


def test_console_script_is_installed() -> None:
    script = shutil.which("contrastkit-joint", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the contrastkit-joint console script is not installed in this environment")
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "joint.ssl_weight" in done.stdout


def test_smoke_config_on_real_cifar(tmp_path: Path) -> None:
    cifar = SHARED_DATA / "cifar10"
    require_shared_data(cifar / "cifar10_test.npz", what="real CIFAR-10")
    config = load_config(
        CONFIG_DIR / "joint_smoke.yaml",
        [
            f"data.data_dir={cifar}",
            f"train.output_dir={tmp_path / 'run'}",
            "train.epochs=1",
            "train.progress_bar=false",
        ],
        JointTrainingConfig,
    )
    result = run_joint(config)
    assert (result.step, result.stopped_by) == (8, None)
    history = read_metrics(tmp_path / "run" / "history.csv")
    assert len(history) == 1 and 0.0 <= float(history[0]["val_top1"]) <= 100.0
    for name in ("report.md", "joint_curves.png", "loss_terms.png", "results.csv"):
        assert (tmp_path / "run" / name).is_file(), name
