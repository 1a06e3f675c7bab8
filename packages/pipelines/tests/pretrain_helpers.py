"""Helpers for the pretrain tests: paths, toy datasets on disk and in memory, tiny configs, and a
runner for the pretrain command line in a subprocess (imported by conftest.py and the tests)."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contrastkit.pipelines.data import InMemoryDataset

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED_DATA = REPO_ROOT / ".." / "shared" / "data"
PRETRAIN_SCRIPT = REPO_ROOT / "packages" / "pipelines" / "pretrain.py"
CONFIG_DIR = REPO_ROOT / "packages" / "pipelines" / "configs"

TOY_CLASSES = 4
TOY_TRAIN_PER_FILE = 16  # x 5 train files = 80 images, 20 per class
TOY_TEST = 40


def signal_driver(module: str) -> str:
    """Python source that runs `contrastkit.pipelines.<module>.main` (pretrain or joint) on argv.

    With CK_TEST_SIGNAL_AT_STEP=k it sends itself SIGTERM right after metrics.csv gets the row of
    step k, i.e. a real signal arriving in the middle of a run.
    """
    return f"""
import os, signal, sys
from contrastkit.pipelines import {module}, metrics
stop_at = int(os.environ.get("CK_TEST_SIGNAL_AT_STEP", "0"))
if stop_at:
    original = metrics.MetricsLogger.log
    def log(self, row):
        original(self, row)
        if int(row["step"]) == stop_at:
            os.kill(os.getpid(), signal.SIGTERM)
    metrics.MetricsLogger.log = log
sys.exit({module}.main(sys.argv[1:]))
"""


SIGNAL_DRIVER = signal_driver("pretrain")


def toy_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A learnable 4-class image toy in CIFAR's npz layout: uint8 (count, 32, 32, 3) and int64 labels.

    Class c has its own mean colour and stripe direction; every image adds its own noise and a
    random stripe phase, so two images of one class differ but stay closer than across classes.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % TOY_CLASSES
    colors = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]], np.float32)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    images = np.empty((count, 32, 32, 3), np.float32)
    for i, c in enumerate(labels):
        phase = rng.uniform(0, 2 * np.pi)
        coordinate = xx if c % 2 == 0 else yy
        stripes = 40 * np.sin(coordinate * (0.5 + 0.25 * (c // 2)) + phase)
        images[i] = colors[c] + stripes[..., None] + rng.normal(0, 20, (32, 32, 3))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def write_toy_cifar(directory: Path) -> Path:
    """Write a toy CIFAR-10 in the npz folder format (5 train files + test) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        x, y = toy_images(TOY_TRAIN_PER_FILE, seed=i)
        np.savez(directory / f"cifar10_train_{i}.npz", x=x, y=y)
    x, y = toy_images(TOY_TEST, seed=100)
    np.savez(directory / "cifar10_test.npz", x=x, y=y)
    return directory


def toy_tabular(count: int = 256, features: int = 6, seed: int = 0) -> InMemoryDataset:
    """4 Gaussian clusters in `features` dimensions: a learnable tabular toy."""
    generator = torch.Generator().manual_seed(seed)
    centers = 3 * torch.randn(TOY_CLASSES, features, generator=generator)
    labels = torch.arange(count) % TOY_CLASSES
    inputs = centers[labels] + torch.randn(count, features, generator=generator)
    return InMemoryDataset(inputs, labels, [f"c{i}" for i in range(TOY_CLASSES)], "tabular")


def tiny_image_config(output_dir: Path, data_dir: Path, **sections: dict[str, Any]) -> dict:
    """A raw config dict for a seconds-long image run on the toy CIFAR: timm's tiny test ResNet at 8x8."""
    base = {
        "method": {"name": "simclr", "queue_size": 64},
        "model": {
            "backbone": "timm:test_resnet",
            "projection_hidden_dim": 32,
            "projection_dim": 16,
            "prediction_hidden_dim": 32,
        },
        "data": {"dataset": "cifar10", "data_dir": str(data_dir), "image_size": 8},
        # Spelled out so a method's preset (ISD's step schedule, decay on every parameter)
        # leaves these tiny runs on the plain warm-up + cosine SGD the tests compute by hand.
        "optimizer": {
            "name": "sgd",
            "lr": 0.05,
            "weight_decay": 5e-4,
            "exclude_bias_and_norm": True,
            "schedule": "warmup_cosine",
        },
        "train": {
            "epochs": 2,
            "batch_size": 16,
            "warmup_epochs": 0.5,
            "log_every": 1,
            "checkpoint_every": 0,
            "knn_every": 1,
            "knn_k": 20,
            "output_dir": str(output_dir),
            "progress_bar": False,
        },
    }
    return merge(base, sections)


def tiny_tabular_config(output_dir: Path, **sections: dict[str, Any]) -> dict:
    """A raw config dict for a sub-second run on `toy_tabular()` (pass it as train_data)."""
    base = {
        "method": {"name": "simclr", "queue_size": 64},
        "model": {
            "backbone": "mlp",
            "backbone_kwargs": {"width": 32, "num_layers": 2},
            "projection_hidden_dim": 32,
            "projection_dim": 16,
            "prediction_hidden_dim": 32,
        },
        "data": {"dataset": "tabular", "augment": "gaussian_noise_views"},
        "optimizer": {"name": "sgd", "lr": 0.1},
        "train": {
            "epochs": 2,
            "batch_size": 32,
            "warmup_epochs": 0,
            "log_every": 1,
            "checkpoint_every": 0,
            "knn_every": 0,
            "output_dir": str(output_dir),
            "progress_bar": False,
        },
    }
    return merge(base, sections)


def merge(base: dict, sections: dict[str, dict[str, Any]]) -> dict:
    result = copy.deepcopy(base)
    for name, values in sections.items():
        result.setdefault(name, {}).update(values)
    return result


def write_yaml(path: Path, data: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_pretrain_cli(
    args: list[str], *, signal_at_step: int = 0, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the pretrain command line in a fresh Python process (the signal driver around `main`)."""
    env = dict(os.environ, CK_TEST_SIGNAL_AT_STEP=str(signal_at_step), PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-c", SIGNAL_DRIVER, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def truncate_file(path: Path, size: int) -> None:
    """Cut `path` to its first `size` bytes (a copy or a save interrupted)."""
    with path.open("r+b") as file:
        file.truncate(size)


def flip_byte(path: Path, offset: int) -> None:
    """Flip the lowest bit of byte `offset` of `path` (silent corruption: the size is unchanged)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def launch_two_processes(script: Path, args: list[str], **env: str) -> subprocess.CompletedProcess:
    """`script` on two CPU processes through `accelerate launch` (extra environment `env`).

    On a host without GPUs accelerate's `--cpu` flag starts one process (multi-CPU needs MPI);
    `--multi_gpu` starts the torchrun launcher, and the pipeline then asks accelerate for gloo.
    """
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), str(script), *args,
    ]  # fmt: skip
    return subprocess.run(
        command, cwd=REPO_ROOT, env={**os.environ, "CUDA_VISIBLE_DEVICES": "", **env},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


TABULAR_FEATURES = 6  # columns of the tabular methods' test batches


def tabular_method(name: str, imix: str = "none", model: dict | None = None, **method: Any):
    """The method `name` around a small MLP (TABULAR_FEATURES -> 16 features), built from
    tiny_tabular_config with these method / model fields, seeded 0."""
    from contrastkit.backbones import create_backbone
    from contrastkit.pipelines.config import config_from_dict
    from contrastkit.pipelines.methods import build_method

    raw = tiny_tabular_config(
        Path("unused"), method={"name": name, "imix": imix, **method}, model=model or {}
    )
    config = config_from_dict(raw)
    torch.manual_seed(0)
    backbone = create_backbone("mlp", in_features=TABULAR_FEATURES, width=16, num_layers=2)
    return build_method(config, backbone)


# Overrides that shrink configs/smoke.yaml to a seconds-long run on the toy CIFAR folder.
SMOKE_SHRINK = [
    "data.image_size=8",
    "data.train_subset=32",
    "data.knn_test_subset=8",
    "model.projection_hidden_dim=32",
    "model.projection_dim=16",
    "train.epochs=1",
    "train.batch_size=16",
    "train.knn_every=0",
    "train.progress_bar=false",
]
