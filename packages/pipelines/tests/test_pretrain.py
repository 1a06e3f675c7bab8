"""The pretrain run and command line end to end: outputs, errors for bad inputs, a non-finite loss,
gradient accumulation, image folders, CSV tables, bf16, the console script, and smoke.yaml on real
CIFAR-10 files."""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pretrain_helpers import (
    CONFIG_DIR,
    PRETRAIN_SCRIPT,
    REPO_ROOT,
    SHARED_DATA,
    run_pretrain_cli,
    tiny_image_config,
    tiny_tabular_config,
    toy_images,
    toy_tabular,
    write_yaml,
)
from shared_data import require_shared_data
from torchvision.io import write_png

from contrastkit.pipelines.checkpoint import list_checkpoints, read_meta, resolve_checkpoint
from contrastkit.pipelines.config import config_from_dict, load_config
from contrastkit.pipelines.data import DeviceBatches
from contrastkit.pipelines.metrics import METRIC_COLUMNS, read_metrics
from contrastkit.pipelines.pretrain import main, run_pretrain
from contrastkit.pipelines.training.task import NonFiniteLossError


def test_image_run_writes_every_output(tmp_path: Path, toy_cifar_dir: Path) -> None:
    raw = tiny_image_config(
        tmp_path / "run", toy_cifar_dir, method={"name": "moco"}, train={"online_linear": True}
    )
    result = run_pretrain(config_from_dict(raw))
    run = result.run_dir
    assert (result.step, result.epoch, result.stopped_by) == (10, 2, None)
    rows = read_metrics(run / "metrics.csv")
    assert list(rows[0]) == list(METRIC_COLUMNS)
    assert [int(r["step"]) for r in rows] == list(range(1, 11))
    assert [float(r["epoch"]) for r in rows] == pytest.approx([s / 5 for s in range(1, 11)])
    measured = [r for r in rows if r["knn_top1"]]
    assert [r["step"] for r in measured] == ["5", "10"]  # knn_every: 1 epoch
    assert all(0 <= float(r["knn_top1"]) <= 100 and r["online_test_top1"] for r in measured)
    assert all(r["online_top1"] and float(r["loss"]) > 0 for r in rows)
    # peak lr = 0.05 * 16 / 256 after half an epoch of warmup
    assert float(rows[2]["lr"]) == pytest.approx(0.05 * 16 / 256)
    assert (run / "curves.png").stat().st_size > 1000
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert load_config(run / "config.yaml") == config_from_dict(raw)
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-5", "checkpoint-10"]


def test_cli_reports_bad_inputs(
    tmp_path: Path, toy_cifar_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    config = write_yaml(tmp_path / "c.yaml", tiny_image_config(tmp_path / "run", toy_cifar_dir))
    cases = [
        ([], "--config is required"),
        (["--config", str(tmp_path / "nope.yaml")], "config file .*nope.yaml' does not exist"),
        (["--config", str(config), "train.batchsize=8"], "unknown key 'batchsize' in section 'train'.*Did you mean 'batch_size'"),
        (["--config", str(config), "optimizer.lr=-1"], r"optimizer\.lr must be > 0\.0, got -1"),
        (["--config", str(config), "--data-dir", str(tmp_path / "nodata")], r"cifar10 split 'train' not found under data_dir=.*nodata.*\n.*torchvision pickle format"),
        (["--config", str(config), "--resume", str(tmp_path / "nowhere")], "checkpoint path .*nowhere' does not exist"),
        (["--config", str(config), "model.backbone=resnet19_cifar"], "resnet19_cifar"),
        (["--config", str(config), "data.augment=simclr2"], "unknown recipe 'simclr2'"),
        (["--config", str(config), "train.batch_size=128"], "fewer than one global batch of 128"),
        (["--resume", "latest"], "--resume latest without --config needs --output-dir"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("contrastkit-pretrain: error: "), err
        assert re.search(message, err), (message, err)
    assert not (tmp_path / "run").exists()  # no error wrote a run dir


def test_resume_without_config_uses_the_saved_one(tmp_path: Path, toy_cifar_dir: Path) -> None:
    raw = tiny_image_config(tmp_path / "run", toy_cifar_dir, train={"epochs": 1, "knn_every": 0})
    config = write_yaml(tmp_path / "c.yaml", raw)
    assert main(["--config", str(config)]) == 0
    assert (
        main(["--resume", "latest", "--output-dir", str(tmp_path / "run"), "train.epochs=2"]) == 0
    )
    assert read_meta(resolve_checkpoint(tmp_path / "run"))["step"] == 10
    assert main(["--resume", str(tmp_path / "run" / "checkpoint-10"), "train.epochs=3"]) == 0
    assert read_meta(resolve_checkpoint(tmp_path / "run"))["step"] == 15


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    data = toy_tabular(128)
    batch = 16
    rows = DeviceBatches(data, batch, seed=0).batch_indices(0)  # the run's first epoch order
    bad_step = 4
    data.inputs[rows[bad_step - 1, 0]] = float("nan")  # one NaN cell: step 4's batch goes NaN
    raw = tiny_tabular_config(tmp_path / "run", train={"batch_size": batch, "checkpoint_every": 1})
    with pytest.raises(
        NonFiniteLossError,
        match=rf"NaN or infinite at or before step {bad_step}.*checkpoint-{bad_step - 1}",
    ):
        run_pretrain(config_from_dict(raw), train_data=data)
    run = tmp_path / "run"
    assert resolve_checkpoint(run).name == f"checkpoint-{bad_step - 1}"
    assert [int(r["step"]) for r in read_metrics(run / "metrics.csv")] == list(range(1, bad_step))
    for checkpoint in list_checkpoints(run):
        state = torch.load(checkpoint / "backbone.pt", weights_only=True)
        assert all(v.isfinite().all() for v in state.values() if v.is_floating_point())


def test_gradient_accumulation_counts_optimizer_steps(tmp_path: Path) -> None:
    raw = tiny_tabular_config(
        tmp_path / "run", train={"batch_size": 16, "grad_accum": 2, "epochs": 2}
    )
    result = run_pretrain(config_from_dict(raw), train_data=toy_tabular(128))
    rows = read_metrics(result.run_dir / "metrics.csv")
    assert result.step == 8 == len(rows)  # 8 micro-batches per epoch -> 4 steps
    assert float(rows[0]["lr"]) == pytest.approx(0.1 * 32 / 256)  # global batch = 16 x 2
    assert read_meta(resolve_checkpoint(result.run_dir))["global_batch"] == 32


# torchvision >= 0.29 deprecates its image codecs in favour of torchcodec; they still work.
@pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities:DeprecationWarning"
)
def test_image_folder_through_a_dataloader(tmp_path: Path) -> None:
    images, labels = toy_images(48, seed=4)
    for split, part in (("train", slice(0, 40)), ("test", slice(40, 48))):
        for i, (image, label) in enumerate(zip(images[part], labels[part])):
            folder = tmp_path / "folder" / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            write_png(
                torch.from_numpy(image).permute(2, 0, 1).contiguous(), str(folder / f"{i}.png")
            )
    raw = tiny_image_config(
        tmp_path / "run", tmp_path / "folder", train={"batch_size": 8, "epochs": 1}
    )
    raw["data"] = {
        "dataset": "image_folder",
        "data_dir": str(tmp_path / "folder"),
        "image_size": 8,
        "num_workers": 0,
    }
    config = config_from_dict(raw)
    assert config.data.loader == "dataloader"
    result = run_pretrain(config)
    rows = read_metrics(result.run_dir / "metrics.csv")
    assert len(rows) == 5 and rows[-1]["knn_top1"]


def test_tabular_csv_fills_in_features(tmp_path: Path) -> None:
    data = toy_tabular(96, features=5)
    csv_path = tmp_path / "table.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Id", *[f"f{i}" for i in range(5)], "label"])
        for i, (row, label) in enumerate(zip(data.inputs.tolist(), data.labels.tolist())):
            writer.writerow([i, *row, label])
    raw = tiny_tabular_config(
        tmp_path / "run",
        method={"name": "moco", "imix": "mixup"},
        train={"knn_every": 1, "knn_k": 10},
    )
    raw["data"].update(
        data_dir=str(csv_path),
        tabular_options={"label_column": "label", "drop_columns": ["Id"], "val_start": 64},
    )
    config = write_yaml(tmp_path / "c.yaml", raw)
    assert main(["--config", str(config)]) == 0
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert saved.model.backbone_kwargs["in_features"] == 5
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert len(rows) == 4 and rows[-1]["knn_top1"]  # 64 train rows / 32, 2 epochs


def test_bf16_mixed_precision_from_accelerate(tmp_path: Path, toy_cifar_dir: Path) -> None:
    # 32x32, not 8x8: torch 2.14's CPU bf16 conv backward intermittently returns non-finite weight
    # gradients when a stride-2 conv sees a 1x1 map (reproduced with a bare nn.Conv2d).
    raw = tiny_image_config(
        tmp_path / "run", toy_cifar_dir, method={"name": "byol"}, train={"epochs": 1},
        data={"image_size": 32},
    )  # fmt: skip
    config = write_yaml(tmp_path / "c.yaml", raw)
    env = dict(os.environ, ACCELERATE_MIXED_PRECISION="bf16")
    done = subprocess.run(
        [sys.executable, str(PRETRAIN_SCRIPT), "--config", str(config)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert read_meta(resolve_checkpoint(tmp_path / "run"))["mixed_precision"] == "bf16"
    assert all(
        math.isfinite(float(r["loss"])) for r in read_metrics(tmp_path / "run" / "metrics.csv")
    )


def test_console_script_is_installed() -> None:
    script = shutil.which("contrastkit-pretrain", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the contrastkit-pretrain console script is not installed in this environment")
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--resume latest|PATH" in done.stdout


def test_smoke_config_on_real_cifar(tmp_path: Path) -> None:
    data_dir = SHARED_DATA / "cifar10"
    require_shared_data(data_dir / "cifar10_train_1.npz", what="real CIFAR-10")
    run = tmp_path / "smoke"
    done = run_pretrain_cli(
        [
            "--config",
            str(CONFIG_DIR / "smoke.yaml"),
            "--data-dir",
            str(data_dir),
            "--output-dir",
            str(run),
        ]
    )
    assert done.returncode == 0, done.stderr
    rows = read_metrics(run / "metrics.csv")
    config = load_config(run / "config.yaml")
    steps = config.data.train_subset // config.train.batch_size * config.train.epochs
    assert len(rows) == steps and all(math.isfinite(float(r["loss"])) for r in rows)
    assert (
        rows[-1]["knn_top1"] and float(rows[-1]["knn_top1"]) > 100 / 10
    )  # 10 classes: above chance
    assert (run / "curves.png").stat().st_size > 1000
    checkpoint = resolve_checkpoint(run)
    assert (checkpoint / "backbone.pt").is_file() and read_meta(checkpoint)["step"] == steps


def test_compiled_backbones_match_eager(tmp_path: Path) -> None:
    losses = {}
    for compiled in (False, True):
        raw = tiny_tabular_config(
            tmp_path / str(compiled), method={"name": "moco"}, model={"compile": compiled},
            train={"epochs": 1},
        )  # fmt: skip
        result = run_pretrain(config_from_dict(raw), train_data=toy_tabular(128))
        losses[compiled] = [float(r["loss"]) for r in read_metrics(result.run_dir / "metrics.csv")]
    assert len(losses[True]) == 4
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
