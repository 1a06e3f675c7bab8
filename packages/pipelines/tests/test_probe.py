"""Tests of the probe command on tiny fake pretrain runs: the results row against an independent kNN,
the feature cache (also outside a read-only checkpoint folder), label fractions, frozen vs
fine-tuned backbones, pictures, report and errors (a damaged backbone.pt, unusable folders)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from accelerate import Accelerator
from matplotlib.image import imread
from readonly import read_only_dir
from shared_data import require_shared_data

from contrastkit.backbones import create_backbone
from contrastkit.pipelines import probe
from contrastkit.pipelines.checkpoint_integrity import write_meta
from contrastkit.pipelines.config import config_from_dict, config_to_dict
from contrastkit.pipelines.data import load_dataset
from contrastkit.pipelines.evaluation import feature_cache
from contrastkit.pipelines.evaluation.feature_cache import file_sha256
from contrastkit.pipelines.evaluation.finetune import StandardizedLinear, train_on_views
from contrastkit.pipelines.evaluation.knn import knn_accuracy
from contrastkit.pipelines.evaluation.linear_probe import label_fraction_indices, standardization
from contrastkit.pipelines.evaluation.pretrained import build_backbone, load_checkpoint
from contrastkit.pipelines.evaluation.results import read_history_csv, read_results

CIFAR = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "cifar10"
TOY_FEATURES, TOY_CLASSES, TOY_TRAIN, TOY_TEST = 8, 4, 300, 100
MLP_KWARGS = {"in_features": TOY_FEATURES, "width": 64, "num_layers": 2}


def write_toy_csv(path: Path, *, features: int = TOY_FEATURES, seed: int = 0) -> Path:
    """Linearly separable clusters: class k sits at 4 * e_k plus N(0, 0.3^2) noise; last column = label."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(TOY_TRAIN + TOY_TEST) % TOY_CLASSES
    centers = 4.0 * torch.eye(TOY_CLASSES, features)
    x = centers[labels] + 0.3 * torch.randn(len(labels), features, generator=generator)
    lines = [",".join([f"f{i}" for i in range(features)] + ["label"])]
    lines += [
        ",".join(f"{value:.6f}" for value in row) + f",{label}"
        for row, label in zip(x.tolist(), labels.tolist(), strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_run(
    root: Path,
    raw_config: dict[str, Any],
    *,
    step: int = 30,
    steps_per_epoch: int = 10,
    backbone_seed: int = 0,
) -> Path:
    """A pretrain run folder as pretrain.py writes it: config.yaml + checkpoint-<step>/{backbone.pt,
    config.yaml, meta.json}, holding a freshly initialised backbone."""
    config = config_to_dict(config_from_dict(raw_config))
    run = root / "run"
    folder = run / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    text = yaml.safe_dump(config, sort_keys=False)
    (run / "config.yaml").write_text(text)
    (folder / "config.yaml").write_text(text)
    torch.manual_seed(backbone_seed)
    backbone = create_backbone(config["model"]["backbone"], **config["model"]["backbone_kwargs"])
    torch.save(backbone.state_dict(), folder / "backbone.pt")
    meta = {
        "step": step,
        "epoch": step // steps_per_epoch,
        "batch_in_epoch": 0,
        "steps_per_epoch": steps_per_epoch,
        "method": config["method"]["name"],
        "backbone": config["model"]["backbone"],
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return run


def tabular_config(csv: Path) -> dict[str, Any]:
    return {
        "method": {"name": "simclr"},
        "model": {"backbone": "mlp", "backbone_kwargs": dict(MLP_KWARGS)},
        "data": {
            "dataset": "tabular",
            "data_dir": str(csv),
            "tabular_options": {"label_column": "label", "val_start": TOY_TRAIN},
        },
        "train": {"epochs": 3, "batch_size": 32, "warmup_epochs": 0},
    }


@pytest.fixture
def tabular_run(tmp_path: Path) -> Path:
    return write_run(tmp_path, tabular_config(write_toy_csv(tmp_path / "toy.csv")))


def hand_features(checkpoint: Path, inputs: torch.Tensor) -> torch.Tensor:
    """Features computed without the probe: the backbone rebuilt from config.yaml + backbone.pt."""
    model = yaml.safe_load((checkpoint / "config.yaml").read_text())["model"]
    backbone = create_backbone(model["backbone"], **model["backbone_kwargs"])
    backbone.load_state_dict(torch.load(checkpoint / "backbone.pt", weights_only=True))
    with torch.no_grad():
        return backbone.eval()(inputs)


def run_main(*argv: str | Path) -> None:
    assert probe.main([str(a) for a in argv] + ["--no-progress"]) == 0


def toy_splits(run: Path) -> tuple[Any, Any]:
    options = {"label_column": "label", "val_start": TOY_TRAIN}
    csv = yaml.safe_load((run / "config.yaml").read_text())["data"]["data_dir"]
    return load_dataset("tabular", csv, "train", **options), load_dataset(
        "tabular", csv, "test", **options
    )


# ---------------------------------------------------------------------------------- results


@pytest.mark.parametrize("solver", ["sgd", "closed_form"])
def test_linear_probe_results_row_matches_independent_knn(
    tabular_run: Path, tmp_path: Path, solver: str
) -> None:
    out = tmp_path / "out"
    run_main("--checkpoint", tabular_run, "--output-dir", out, "--epochs", "40",
             "--solver", solver, "--no-tsne")  # fmt: skip

    rows = read_results(out / "results.csv")
    assert len(rows) == 1
    row = rows[0]
    assert row["method"] == "simclr" and row["backbone"] == "mlp" and row["epochs"] == "3"
    assert row["dataset"] == "tabular" and row["mode"] == "linear" and row["solver"] == solver
    assert float(row["wall_s"]) > 0
    assert float(row["linear_top1"]) >= 98.0  # separable clusters
    assert 0.0 <= float(row["top5"]) <= 100.0

    checkpoint = tabular_run / "checkpoint-30"
    assert row["checkpoint"] == str(checkpoint)
    train, test = toy_splits(tabular_run)
    train_f, test_f = (
        hand_features(checkpoint, train.inputs),
        hand_features(checkpoint, test.inputs),
    )
    for column, k in (("knn_top1", 200), ("knn_top1_k20", 20)):
        expected = knn_accuracy(train_f, train.labels, test_f, test.labels, TOY_CLASSES, k=k)
        assert float(row[column]) == pytest.approx(expected["top1"], abs=1e-9)

    history = read_history_csv(out / "metrics.csv")
    assert len(history) == (40 if solver == "sgd" else 1)
    assert history[-1]["val_top1"] == pytest.approx(float(row["linear_top1"]))


def test_results_rows_append_and_report_embeds_pictures(tabular_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_main("--checkpoint", tabular_run, "--output-dir", out, "--epochs", "5", "--no-tsne")
    run_main("--checkpoint", tabular_run, "--output-dir", out, "--solver", "lbfgs",
             "--epochs", "5", "--no-tsne")  # fmt: skip
    rows = read_results(out / "results.csv")
    assert [r["solver"] for r in rows] == ["sgd", "lbfgs"]

    image = imread(out / "probe_curves.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0  # not a blank canvas
    assert not (out / "nn_grid.png").exists()  # tabular rows are not images
    assert not (out / "tsne.png").exists()  # --no-tsne
    report = (out / "report.md").read_text()
    assert "](probe_curves.png)" in report
    assert "| mlp |" in report  # the results table
    summary = (out / "model_summary.md").read_text()
    assert summary in report
    # backbone + classifier table: 64-wide MLP features -> 4 classes = 64 * 4 + 4 parameters in the head.
    assert "| 260 |" in summary and "Total" in summary


# ---------------------------------------------------------------------------------- feature cache


def test_feature_cache_created_reused_and_invalidated(
    tabular_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extracted: list[int] = []
    real_extract = feature_cache.extract_features

    def counting_extract(backbone: Any, inputs: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        extracted.append(inputs.shape[0])
        return real_extract(backbone, inputs, **kwargs)

    monkeypatch.setattr(feature_cache, "extract_features", counting_extract)
    checkpoint = tabular_run / "checkpoint-30"
    caches = [checkpoint / "features-tabular-train.pt", checkpoint / "features-tabular-test.pt"]
    argv = ["--checkpoint", tabular_run, "--output-dir", tmp_path / "out", "--epochs", "2",
            "--no-tsne"]  # fmt: skip

    run_main(*argv)
    assert sorted(n for n in extracted if n > 2) == [TOY_TEST, TOY_TRAIN]
    assert all(path.is_file() for path in caches)
    train, _ = toy_splits(tabular_run)
    stored = torch.load(caches[0], weights_only=True)
    torch.testing.assert_close(stored["features"], hand_features(checkpoint, train.inputs))
    stamps = [path.stat().st_mtime_ns for path in caches]

    extracted.clear()
    run_main(*argv)
    assert [n for n in extracted if n > 2] == []  # both splits read back from the cache
    assert [path.stat().st_mtime_ns for path in caches] == stamps

    # The checkpoint changes in place: new weights in backbone.pt -> the cache is stale.
    torch.manual_seed(123)
    torch.save(create_backbone("mlp", **MLP_KWARGS).state_dict(), checkpoint / "backbone.pt")
    extracted.clear()
    run_main(*argv)
    assert sorted(n for n in extracted if n > 2) == [TOY_TEST, TOY_TRAIN]
    stored = torch.load(caches[0], weights_only=True)
    torch.testing.assert_close(stored["features"], hand_features(checkpoint, train.inputs))
    assert stored["key"]["backbone_sha256"] == file_sha256(checkpoint / "backbone.pt")


def test_random_init_probes_the_untrained_network_and_keeps_the_caches_apart(
    tabular_run: Path, tmp_path: Path
) -> None:
    """--random-init: the same network freshly initialized from --seed (features checked by hand),
    its own caches (the trained ones untouched and still used), its own output folder and row."""
    checkpoint = tabular_run / "checkpoint-30"
    run_main("--checkpoint", tabular_run, "--epochs", "2", "--no-tsne")  # trained: caches it
    trained_caches = {p.name: p.stat().st_mtime_ns for p in checkpoint.glob("features-*.pt")}
    assert len(trained_caches) == 2
    run_main("--checkpoint", tabular_run, "--random-init", "--seed", "3", "--epochs", "2",
             "--no-tsne")  # fmt: skip
    out = tabular_run / "probe-tabular-random-init"  # the default folder, apart from the trained
    (row,) = read_results(out / "results.csv")
    assert row["method"] == "random_init" and row["epochs"] == "0" and row["step"] == "0"
    assert row["backbone"] == "mlp" and row["seed"] == "3"
    report = (out / "report.md").read_text()
    assert "| pretraining | none: the network of `" in report
    assert "freshly initialized (--random-init, seed 3), mlp" in report
    assert "use the untrained backbone's features" in report

    # The features it probed are those of create_backbone after torch.manual_seed(3).
    torch.manual_seed(3)
    fresh = create_backbone("mlp", **MLP_KWARGS).eval()
    train, test = toy_splits(tabular_run)
    with torch.no_grad():
        train_f, test_f = fresh(train.inputs), fresh(test.inputs)
    expected = knn_accuracy(train_f, train.labels, test_f, test.labels, TOY_CLASSES, k=200)
    assert float(row["knn_top1"]) == pytest.approx(expected["top1"], abs=1e-9)
    trained_f = hand_features(checkpoint, train.inputs)
    assert not torch.allclose(train_f, trained_f)  # really not the trained weights
    random_caches = sorted(p for p in checkpoint.glob("*-features-*.pt"))
    assert len(random_caches) == 2  # named with the fresh weights' fingerprint
    torch.testing.assert_close(torch.load(random_caches[1], weights_only=True)["features"], train_f)
    now = {p.name: p.stat().st_mtime_ns for p in checkpoint.glob("features-*.pt")}
    assert now == trained_caches  # the trained caches were neither replaced nor rewritten

    # Another seed, another network and its own caches; the same seed again reuses its caches.
    stamps = {p: p.stat().st_mtime_ns for p in random_caches}
    run_main("--checkpoint", tabular_run, "--random-init", "--seed", "4", "--epochs", "2",
             "--no-tsne", "--output-dir", tmp_path / "seed4")  # fmt: skip
    run_main("--checkpoint", tabular_run, "--random-init", "--seed", "3", "--epochs", "2",
             "--no-tsne", "--output-dir", tmp_path / "seed3")  # fmt: skip
    assert len(list(checkpoint.glob("*-features-*.pt"))) == 4
    assert {p: p.stat().st_mtime_ns for p in random_caches} == stamps
    again = read_results(tmp_path / "seed3" / "results.csv")[0]
    assert again["knn_top1"] == row["knn_top1"] and again["linear_top1"] == row["linear_top1"]


# ---------------------------------------------------------------------------------- label fraction


def test_label_fraction_uses_a_balanced_labelled_subset(tabular_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_main("--checkpoint", tabular_run, "--output-dir", out, "--epochs", "20",
             "--label-fraction", "0.1", "--seed", "3", "--no-tsne")  # fmt: skip
    row = read_results(out / "results.csv")[0]
    assert float(row["label_fraction"]) == 0.1

    train, test = toy_splits(tabular_run)
    labelled = label_fraction_indices(train.labels, 0.1, seed=3)
    counts = torch.bincount(train.labels[labelled], minlength=TOY_CLASSES)
    per_class = round(0.1 * TOY_TRAIN / TOY_CLASSES)  # 7.5 -> 8
    assert counts.tolist() == [per_class] * TOY_CLASSES
    assert (
        f"{per_class * TOY_CLASSES} labelled of 300 train samples"
        in (out / "report.md").read_text()
    )

    checkpoint = tabular_run / "checkpoint-30"
    train_f = hand_features(checkpoint, train.inputs)[labelled]
    test_f = hand_features(checkpoint, test.inputs)
    expected = knn_accuracy(train_f, train.labels[labelled], test_f, test.labels, 4, k=20)
    assert float(row["knn_top1_k20"]) == pytest.approx(expected["top1"], abs=1e-9)
    assert float(row["linear_top1"]) >= 90.0  # 30 labels of separable clusters suffice


# ---------------------------------------------------------------------------------- fine-tuning


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def test_standardized_linear_head_against_the_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    features = 3.0 + 2.0 * torch.randn(50, 6, generator=generator)
    mean, std = standardization(features)
    torch.testing.assert_close(mean, features.mean(0))
    torch.testing.assert_close(std, features.std(0, unbiased=False))
    fixed = StandardizedLinear(mean, std, 3, seed=1)
    weight, bias = fixed.classifier.linear.weight, fixed.classifier.linear.bias
    expected = ((features - mean) / std) @ weight.T + bias
    torch.testing.assert_close(fixed(features), expected)
    # Fine-tuning head: starts as the fixed one in eval, normalises by batch statistics in training.
    tracking = StandardizedLinear(mean, std, 3, seed=1, track_batches=True)
    torch.testing.assert_close(tracking.eval()(features), expected, rtol=1e-4, atol=1e-5)
    batch = features[:10]
    by_batch = (batch - batch.mean(0)) / (batch.var(0, unbiased=False) + 1e-6).sqrt()
    torch.testing.assert_close(tracking.train()(batch), by_batch @ weight.T + bias)


@pytest.mark.parametrize("finetune", [False, True])
def test_frozen_training_keeps_the_backbone_and_finetuning_changes_it(
    tabular_run: Path, finetune: bool
) -> None:
    checkpoint = load_checkpoint(tabular_run)
    backbone = build_backbone(checkpoint)
    train, test = toy_splits(tabular_run)
    features = hand_features(checkpoint.path, train.inputs)
    mean, std = standardization(features)
    head = StandardizedLinear(mean, std, TOY_CLASSES, seed=0, track_batches=finetune)
    before_backbone, before_head = _state(backbone), _state(head)

    result = train_on_views(
        backbone, head, train, test, accelerator=Accelerator(), finetune=finetune,
        epochs=3, lr=0.05, batch_size=64, weight_decay=0.0, seed=0, view_dataset="tabular",
        progress=False,
    )  # fmt: skip

    after_backbone = _state(backbone)
    # Every tensor, BatchNorm running statistics included.
    unchanged = [torch.equal(before_backbone[k], after_backbone[k]) for k in before_backbone]
    if finetune:
        assert not all(unchanged)
    else:
        assert all(unchanged)
    assert not torch.equal(before_head["classifier.linear.weight"], head.classifier.linear.weight)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    assert result.top1 == result.history[-1]["val_top1"]
    assert result.top1 >= 90.0  # chance is 25


def test_finetune_command_saves_a_changed_backbone(tabular_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    checkpoint = tabular_run / "checkpoint-30"
    digest = file_sha256(checkpoint / "backbone.pt")
    run_main("--checkpoint", tabular_run, "--output-dir", out, "--finetune", "--epochs", "2",
             "--lr", "0.1", "--backbone-lr-scale", "0.5", "--no-tsne")  # fmt: skip

    row = read_results(out / "results.csv")[0]
    assert row["mode"] == "finetune" and row["probe_epochs"] == "2"
    assert file_sha256(checkpoint / "backbone.pt") == digest  # the checkpoint is read only
    saved = torch.load(out / "finetuned.pt", weights_only=True)
    original = torch.load(checkpoint / "backbone.pt", weights_only=True)
    assert saved["backbone"].keys() == original.keys()
    assert any(not torch.equal(saved["backbone"][k], original[k]) for k in original)
    history = read_history_csv(out / "metrics.csv")
    assert [h["epoch"] for h in history] == [1, 2]
    # Cosine schedule: the head's lr after the last step of epoch 2 is back at 0.
    assert history[0]["lr"] == pytest.approx(0.05, rel=0.2) and history[-1]["lr"] == pytest.approx(
        0
    )


# ---------------------------------------------------------------------------------- images


def _write_small_cifar(folder: Path, train: int, test: int) -> Path:
    """An npz folder in the shared CIFAR-10 format holding the first images of the real files."""
    require_shared_data(CIFAR / "cifar10_train_1.npz", what="real CIFAR-10")
    folder.mkdir(parents=True)
    with np.load(CIFAR / "cifar10_train_1.npz") as data:
        x, y = data["x"][:train], data["y"][:train]
    for part, chunk in enumerate(np.array_split(np.arange(train), 5), start=1):
        np.savez(folder / f"cifar10_train_{part}.npz", x=x[chunk], y=y[chunk])
    with np.load(CIFAR / "cifar10_test.npz") as data:
        np.savez(folder / "cifar10_test.npz", x=data["x"][:test], y=data["y"][:test])
    return folder


def _write_image_folder(folder: Path, cifar: Path, per_split: dict[str, int]) -> Path:
    """train/ and test/ folders of PNGs (one sub-folder per class) cut from the small CIFAR copy."""
    from PIL import Image

    with np.load(cifar / "cifar10_test.npz") as data:
        x, y = data["x"], data["y"]
    start = 0
    for split, count in per_split.items():
        for index in range(start, start + count):
            target = folder / split / f"class_{y[index] % 3}"
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[index]).save(target / f"{index}.png")
        start += count
    return folder


def test_image_probe_writes_every_picture_and_transfers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cifar = _write_small_cifar(tmp_path / "cifar", train=200, test=100)
    run = write_run(
        tmp_path,
        {
            "method": {"name": "moco"},
            "model": {"backbone": "timm:test_resnet", "projection_hidden_dim": 32,
                      "projection_dim": 16},
            "data": {"dataset": "cifar10", "data_dir": str(cifar)},
            "train": {"epochs": 2, "batch_size": 32, "warmup_epochs": 0},
        },
    )  # fmt: skip
    out = tmp_path / "out"
    run_main("--checkpoint", run / "checkpoint-30", "--output-dir", out, "--epochs", "10",
             "--tsne-points", "60")  # fmt: skip
    for name in ("probe_curves.png", "tsne.png", "nn_grid.png"):
        image = imread(out / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 100 and image.std() > 0
    report = (out / "report.md").read_text()
    for name in ("probe_curves.png", "tsne.png", "nn_grid.png"):
        assert f"]({name})" in report
    summary = (out / "model_summary.md").read_text()
    assert "timm:test_resnet + linear classifier" in summary
    assert "projection head used in moco pretraining" in summary
    # The projection head of config: Linear(96, 32, no bias) + BN(32) + Linear(32, 16).
    assert "| **Total** | | **3,664**" in summary

    # Augmented linear probe (frozen): a second row, features recomputed per epoch.
    run_main("--checkpoint", run, "--output-dir", out, "--augment", "--epochs", "2",
             "--no-tsne", "--no-nn-grid")  # fmt: skip
    rows = read_results(out / "results.csv")
    assert [r["mode"] for r in rows] == ["linear", "augment"]
    assert rows[0]["knn_top1"] == rows[1]["knn_top1"]  # same cached pretrained features

    # Transfer: the CIFAR-10 backbone probed on an image folder with 3 classes.
    message = _error(capsys, "--checkpoint", run, "--data", "image_folder")
    assert "--data-dir is required for --data 'image_folder'" in message
    folder = _write_image_folder(tmp_path / "folder", cifar, {"train": 48, "test": 30})
    transfer = tmp_path / "transfer"
    run_main("--checkpoint", run, "--data", "image_folder", "--data-dir", folder,
             "--output-dir", transfer, "--epochs", "5", "--no-tsne")  # fmt: skip
    row = read_results(transfer / "results.csv")[0]
    assert row["dataset"] == "image_folder" and row["pretrain_dataset"] == "cifar10"
    assert (run / "checkpoint-30" / "features-image_folder-train.pt").is_file()
    assert imread(transfer / "nn_grid.png").std() > 0


# ---------------------------------------------------------------------------------- errors


def _error(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> str:
    assert probe.main([str(a) for a in argv] + ["--no-progress"]) == 2
    return capsys.readouterr().err


def test_bad_checkpoint_paths_say_what_was_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    file = tmp_path / "file.pt"
    file.write_bytes(b"")
    for path in (tmp_path / "missing", empty, file):
        message = _error(capsys, "--checkpoint", path, "--output-dir", tmp_path / "out")
        assert message.startswith("contrastkit-probe: error:")
        assert "checkpoint-<step>" in message and "backbone.pt" in message, message
        assert "Traceback" not in message
    assert not (tmp_path / "out").exists()


def test_mismatched_inputs_and_options_give_clear_errors(
    tabular_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--output-dir", tmp_path / "out"]
    narrow = write_toy_csv(tmp_path / "narrow.csv", features=5)
    message = _error(capsys, "--checkpoint", tabular_run, "--data-dir", narrow, *out)
    assert "input dimensions do not match" in message and "8 feature columns" in message
    assert "5 feature columns" in message

    message = _error(capsys, "--checkpoint", tabular_run, "--data", "cifar10",
                     "--data-dir", tmp_path, *out)  # fmt: skip
    assert "tabular" in message and "cifar10" in message

    message = _error(capsys, "--checkpoint", tabular_run, "--finetune", "--solver", "lbfgs", *out)
    assert "--solver lbfgs" in message

    message = _error(capsys, "--checkpoint", tabular_run, "--label-fraction", "0", *out)
    assert "--label-fraction must be in (0, 1]" in message

    (tabular_run / "checkpoint-30" / "backbone.pt").write_bytes(b"not a state dict")
    message = _error(capsys, "--checkpoint", tabular_run, *out)
    assert "backbone.pt' cannot be read: it is truncated or damaged" in message


# ---------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_pretrain_then_probe_then_compare_on_real_cifar(tmp_path: Path) -> None:
    from contrastkit.pipelines import compare, pretrain

    cifar = _write_small_cifar(tmp_path / "cifar", train=400, test=100)
    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    run = tmp_path / "smoke"
    status = pretrain.main(
        ["--config", str(smoke), "--output-dir", str(run), "--data-dir", str(cifar),
         "data.train_subset=128", "data.knn_test_subset=60", "train.epochs=1",
         "train.batch_size=32", "train.progress_bar=false"]
    )  # fmt: skip
    assert status == 0

    out = tmp_path / "probe"
    run_main("--checkpoint", run, "--output-dir", out, "--epochs", "5", "--train-subset", "200",
             "--no-tsne")  # fmt: skip
    row = read_results(out / "results.csv")[0]
    assert row["method"] == "simclr" and row["backbone"] == "myresnet" and row["epochs"] == "1"
    assert row["checkpoint"] == str(run / "checkpoint-4")  # 128 images / batch 32, 1 epoch
    assert 0.0 <= float(row["linear_top1"]) <= 100.0 and 0.0 <= float(row["knn_top1"]) <= 100.0
    report = (out / "report.md").read_text()
    assert "](probe_curves.png)" in report and "](nn_grid.png)" in report
    assert "myresnet + linear classifier" in report

    assert compare.main([str(run), str(out), "--output", str(tmp_path / "compare.png")]) == 0
    assert imread(tmp_path / "compare.png").std() > 0


# ---------------------------------------------------------------------------------- two processes


def test_two_processes_match_one_on_the_same_global_batch(
    tabular_run: Path, tmp_path: Path
) -> None:
    """accelerate launch with 2 CPU processes (gloo), per-process batch 32, trains the same head as
    1 process with batch 64: same batches (DeviceBatches' rule), DDP averages the gradients, and
    tabular identity views are deterministic; only the main process writes."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = Path(__file__).resolve().parents[3]
    common = ["--checkpoint", str(tabular_run), "--augment", "--epochs", "3", "--no-tsne",
              "--no-progress"]  # fmt: skip
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(port), "packages/pipelines/probe.py", *common,
        "--output-dir", str(tmp_path / "two"), "--batch-size", "32",
    ]  # fmt: skip
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_main(*common, "--output-dir", tmp_path / "one", "--batch-size", "64")

    assert len(read_results(tmp_path / "two" / "results.csv")) == 1
    one = read_history_csv(tmp_path / "one" / "metrics.csv")
    two = read_history_csv(tmp_path / "two" / "metrics.csv")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two, strict=True):
        for key in ("train_loss", "val_loss", "val_top1", "lr"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (key, a, b)


# ---------------------------------------------------------------------------------- paths


PROBE_SCRIPT = Path(__file__).resolve().parents[1] / "probe.py"


def run_probe_cli(*argv: str | Path) -> subprocess.CompletedProcess:
    """The probe command in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, str(PROBE_SCRIPT), *(str(a) for a in argv), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _manifest_run(root: Path) -> Path:
    """A tabular run whose checkpoint meta.json records its files, as pretrain writes it."""
    run = write_run(root, tabular_config(write_toy_csv(root / "toy.csv")))
    folder = run / "checkpoint-30"
    write_meta(folder, json.loads((folder / "meta.json").read_text()))
    return run


def test_probe_of_a_read_only_checkpoint_caches_features_elsewhere(tmp_path: Path) -> None:
    run = _manifest_run(tmp_path)
    checkpoint = run / "checkpoint-30"
    before = sorted(p.name for p in checkpoint.iterdir())
    out = tmp_path / "out"
    with read_only_dir(checkpoint):
        done = run_probe_cli("--checkpoint", run, "--output-dir", out, "--epochs", "2",
                             "--no-tsne")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert (
            f"the checkpoint folder {str(checkpoint)!r} is not writable; caching features in "
            f"{str(out)!r} (choose another folder with --cache-dir)" in done.stderr
        )
        # The caches carry the weights' fingerprint: one folder can hold several checkpoints'.
        prefix = file_sha256(checkpoint / "backbone.pt")[:16]
        caches = sorted(p.name for p in out.glob("*features-*.pt"))
        assert caches == [
            f"{prefix}-features-tabular-test.pt",
            f"{prefix}-features-tabular-train.pt",
        ]
        train, _ = toy_splits(run)
        stored = torch.load(out / caches[1], weights_only=True)
        torch.testing.assert_close(stored["features"], hand_features(checkpoint, train.inputs))

        cache = tmp_path / "cache"
        run_main("--checkpoint", run, "--output-dir", out, "--cache-dir", cache, "--epochs", "2",
                 "--no-tsne")  # fmt: skip
        assert sorted(p.name for p in cache.iterdir()) == caches
    assert sorted(p.name for p in checkpoint.iterdir()) == before
    assert len(read_results(out / "results.csv")) == 2


def test_unusable_output_or_cache_folder_is_one_line_before_any_work(
    tabular_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file, out = tmp_path / "file", tmp_path / "out"
    file.write_text("x")
    for argv in (
        ["--output-dir", file / "sub"],
        ["--output-dir", out, "--cache-dir", file / "sub"],
    ):
        message = _error(capsys, "--checkpoint", tabular_run, *argv)
        assert message.count("\n") == 1 and "Traceback" not in message
        option = argv[-2]
        assert message == (
            f"contrastkit-probe: error: {option} {str(file / 'sub')!r} cannot be created: "
            f"{str(file)!r} is a file, not a folder\n"
        )
    assert list(out.iterdir()) == []  # checked before any work: nothing written
    assert not list((tabular_run / "checkpoint-30").glob("*features-*"))


def test_probe_on_a_truncated_backbone_exits_2_in_one_line(tmp_path: Path) -> None:
    # Written before 0.2 (no record of the files in meta.json): torch.load fails, at 64 KiB with
    # "[Errno 22] Invalid argument"; the message names the file and says it is damaged.
    config = tabular_config(write_toy_csv(tmp_path / "toy.csv"))
    config["model"]["backbone_kwargs"]["width"] = 256  # a backbone.pt of about 300 KB
    run = write_run(tmp_path, config)
    backbone = run / "checkpoint-30" / "backbone.pt"
    assert backbone.stat().st_size > 65536
    with backbone.open("r+b") as handle:
        handle.truncate(65536)
    done = run_probe_cli("--checkpoint", run, "--output-dir", tmp_path / "out")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(
        f"contrastkit-probe: error: checkpoint file {str(backbone)!r} cannot be read: it is "
        "truncated or damaged (65536 bytes"
    )


def test_probe_checks_the_backbone_against_meta_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _manifest_run(tmp_path)
    backbone = run / "checkpoint-30" / "backbone.pt"
    data = bytearray(backbone.read_bytes())
    data[-100] ^= 0x01  # still loads as a state dict, with one weight changed
    backbone.write_bytes(bytes(data))
    folder = run / "checkpoint-30"
    problem = "backbone.pt does not match its SHA-256 in meta.json (damaged or changed)"
    message = _error(capsys, "--checkpoint", folder, "--output-dir", tmp_path / "out")
    assert message == (
        f"contrastkit-probe: error: checkpoint folder {str(folder)!r} is damaged: {problem}; "
        "probe another checkpoint folder of the run\n"
    )
    message = _error(capsys, "--checkpoint", run, "--output-dir", tmp_path / "out")
    assert message.splitlines() == [
        f"contrastkit-probe: error: no checkpoint in {str(run)!r} passes its check (they are "
        "left in place):",
        f"  checkpoint-30: {problem}",
        "pass one of its checkpoint folders that is intact, or another run directory",
    ]


def test_knn_k_above_the_labelled_samples(
    tabular_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--label-fraction 0.05 leaves 16 labelled train samples: an explicit --knn-k 17 is an error
    before any work; the defaults (20 200) become k=16, said in one note."""
    fraction = ["--label-fraction", "0.05", "--no-tsne", "--epochs", "2"]
    message = _error(capsys, "--checkpoint", tabular_run, "--output-dir", tmp_path / "a",
                     "--knn-k", "5", "17", *fraction)  # fmt: skip
    assert message == (
        "contrastkit-probe: error: --knn-k=17 is larger than the 16 labelled train samples; "
        "use --knn-k values <= 16\n"
    )
    assert not (tabular_run / "checkpoint-30" / "features-tabular-train.pt").exists()

    out = tmp_path / "b"
    run_main("--checkpoint", tabular_run, "--output-dir", out, *fraction)
    assert (
        "kNN with k=16 instead of the default 200: there are 16 labelled" in capsys.readouterr().err
    )
    row = read_results(out / "results.csv")[0]
    assert row["knn_k"] == "16" and row["knn_top1_k20"] == ""
    train, test = toy_splits(tabular_run)
    labelled = label_fraction_indices(train.labels, 0.05, seed=0)
    checkpoint = tabular_run / "checkpoint-30"
    train_f = hand_features(checkpoint, train.inputs)[labelled]
    expected = knn_accuracy(
        train_f,
        train.labels[labelled],
        hand_features(checkpoint, test.inputs),
        test.labels,
        4,
        k=16,
    )
    assert float(row["knn_top1"]) == pytest.approx(expected["top1"], abs=1e-9)
