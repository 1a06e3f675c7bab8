"""The start-of-run data checks of training/run_data.py: a MoCo/ISD queue smaller than the global
batch, train.knn_k above the kNN bank, subset sizes named by their config field, and image
folders with unreadable files, in process and through the real pretrain command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from pretrain_helpers import (
    TOY_CLASSES,
    TOY_TRAIN_PER_FILE,
    run_pretrain_cli,
    tiny_image_config,
    tiny_tabular_config,
    toy_images,
    write_yaml,
)
from torchvision.io import encode_png

from contrastkit.backbones import create_backbone
from contrastkit.objectives import MemoryQueue, SwAVQueue
from contrastkit.pipelines.config import PretrainConfig, config_from_dict
from contrastkit.pipelines.data import UnreadableImagesError
from contrastkit.pipelines.methods import METHODS, build_method
from contrastkit.pipelines.metrics import read_metrics
from contrastkit.pipelines.training.run_data import (
    QUEUE_METHODS,
    check_queue_fits,
    prepare_data,
)

TOY_TRAIN = 5 * TOY_TRAIN_PER_FILE  # 80 images in the toy CIFAR's train split
pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities:DeprecationWarning"
)


def _config(tmp_path: Path, data_dir: Path, **sections: dict) -> PretrainConfig:
    return config_from_dict(tiny_image_config(tmp_path / "run", data_dir, **sections))


def _prepare(config: PretrainConfig):
    return prepare_data(config, Accelerator(cpu=True), None, None)


# ------------------------------------------------------------------------------------ the queue


def test_queue_methods_are_the_methods_that_build_a_queue() -> None:
    with_queue = []
    for name in METHODS:
        config = config_from_dict(tiny_tabular_config(Path("unused"), method={"name": name}))
        backbone = create_backbone("mlp", in_features=6, width=8, num_layers=1)
        method = build_method(config, backbone)
        if any(isinstance(module, MemoryQueue | SwAVQueue) for module in method.modules()):
            with_queue.append(name)
    assert tuple(sorted(with_queue)) == QUEUE_METHODS


@pytest.mark.parametrize("method", ["moco", "isd", "nnclr", "swav"])
def test_queue_smaller_than_the_global_batch_stops_before_any_data_is_read(
    tmp_path: Path, method: str
) -> None:
    # The data folder does not exist: the queue error must come first.
    config = _config(tmp_path, tmp_path / "no-data", method={"name": method, "queue_size": 3})
    message = (
        f"method.queue_size=3 is smaller than the global batch of 16 (train.batch_size=16 x "
        f"1 process) that {method} enqueues every step: set method.queue_size >= 16"
    )
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        _prepare(config)


def test_queue_check_counts_every_process_and_only_queue_methods(tmp_path: Path) -> None:
    data = tmp_path / "no-data"
    config = _config(tmp_path, data, method={"name": "moco", "queue_size": 24})
    check_queue_fits(config, 1)  # 24 >= 16
    with pytest.raises(ValueError, match=r"global batch of 32 \(train.batch_size=16 x 2 processes"):
        check_queue_fits(config, 2)  # each step enqueues the keys of both processes
    check_queue_fits(_config(tmp_path, data, method={"name": "moco", "queue_size": 32}), 2)
    check_queue_fits(_config(tmp_path, data, method={"name": "simclr", "queue_size": 3}), 4)

    from contrastkit.pipelines.config import JointTrainingConfig

    raw = tiny_image_config(tmp_path / "run", data, method={"name": "isd", "queue_size": 3})
    supervised = config_from_dict({**raw, "joint": {"ssl_weight": 0.0}}, JointTrainingConfig)
    check_queue_fits(supervised, 1)  # lambda = 0 builds no method, so no queue
    joint = config_from_dict({**raw, "joint": {"ssl_weight": 0.5}}, JointTrainingConfig)
    with pytest.raises(ValueError, match=r"method\.queue_size=3"):
        check_queue_fits(joint, 1)


# ------------------------------------------------------------------------------ the kNN bank


def test_knn_k_above_the_bank_stops_at_start_naming_both(
    tmp_path: Path, toy_cifar_dir: Path
) -> None:
    config = _config(tmp_path, toy_cifar_dir, data={"knn_train_subset": 12}, train={"knn_k": 13})
    with pytest.raises(ValueError) as error:
        _prepare(config)
    assert str(error.value) == (
        "train.knn_k=13 is larger than the 12 training samples in the kNN bank (after "
        "data.knn_train_subset=12); set train.knn_k <= 12, use more samples "
        "(data.knn_train_subset), or turn the kNN monitor off with train.knn_every=0"
    )
    # train_subset shrinks the bank too, and is named.
    config = _config(tmp_path, toy_cifar_dir, data={"train_subset": 40}, train={"knn_k": 41})
    with pytest.raises(ValueError, match=r"the 40 training samples in the kNN bank \(after data\."):
        _prepare(config)

    fits = _prepare(
        _config(tmp_path, toy_cifar_dir, data={"knn_train_subset": 12}, train={"knn_k": 12})
    )
    assert fits.knn_train is not None and len(fits.knn_train) == 12
    unmonitored = _prepare(
        _config(tmp_path, toy_cifar_dir, train={"knn_k": 100000, "knn_every": 0})
    )
    assert unmonitored.knn_train is None


def test_knn_k_above_the_bank_through_the_command_exits_2(
    tmp_path: Path, toy_cifar_dir: Path
) -> None:
    run = tmp_path / "run"
    config = write_yaml(tmp_path / "c.yaml", tiny_image_config(run, toy_cifar_dir))
    done = run_pretrain_cli(["--config", str(config), "train.knn_k=100000"])
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("contrastkit-pretrain: error: train.knn_k=100000 is larger than the ")
    assert f"the {TOY_TRAIN} training samples in the kNN bank (the whole training split)" in last
    assert "Traceback" not in done.stderr
    written = sorted(p.name for p in run.iterdir()) if run.exists() else []
    assert not [n for n in written if n in ("config.yaml", "metrics.csv") or "checkpoint" in n]


# ------------------------------------------------------------------------ subsets, by name


def test_subset_errors_name_the_config_field(tmp_path: Path, toy_cifar_dir: Path) -> None:
    config = _config(tmp_path, toy_cifar_dir, data={"train_subset": 3})
    with pytest.raises(
        ValueError,
        match=rf"^data\.train_subset=3 is smaller than the number of classes \({TOY_CLASSES}\)",
    ):
        _prepare(config)
    config = _config(tmp_path, toy_cifar_dir, data={"knn_test_subset": 2})
    with pytest.raises(ValueError, match=r"^data\.knn_test_subset=2 is smaller than the number"):
        _prepare(config)
    config = _config(tmp_path, toy_cifar_dir, data={"train_subset": TOY_TRAIN + 1})
    with pytest.raises(
        ValueError, match=rf"^data\.train_subset=81 is larger than the split \({TOY_TRAIN} samples"
    ):
        _prepare(config)


# ------------------------------------------------------------------- image folders at start


def _image_folder(root: Path, bad: dict[str, bytes]) -> Path:
    """root/{train,test}/class{c}/{i}.png from the toy images (40 train, 8 test), plus `bad`:
    relative path -> file content."""
    images, labels = toy_images(48, seed=4)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        split = "train" if i < 40 else "test"
        folder = root / split / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        png = encode_png(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
        (folder / f"{i:02d}.png").write_bytes(png.numpy().tobytes())
    for name, content in bad.items():
        (root / name).write_bytes(content)
    return root


def _folder_config(tmp_path: Path, root: Path, **data: object) -> dict:
    raw = tiny_image_config(tmp_path / "run", root, train={"batch_size": 8, "epochs": 1})
    raw["data"] = {
        "dataset": "image_folder",
        "data_dir": str(root),
        "image_size": 8,
        "num_workers": 0,
        **data,
    }
    return raw


BAD_TRAIN = {"train/class1/zz-empty.png": b"", "train/class2/zz-text.png": b"hello"}


def test_unreadable_images_through_the_command_exit_2_listing_all(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "folder", BAD_TRAIN)
    config = write_yaml(tmp_path / "c.yaml", _folder_config(tmp_path, root))
    done = run_pretrain_cli(["--config", str(config)])
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    error = done.stderr[done.stderr.index("contrastkit-pretrain: error: ") :]
    assert f"2 of 42 image files under {root / 'train'} cannot be read:" in error
    assert "class1/zz-empty.png: empty file (0 bytes)" in error
    assert "class2/zz-text.png: not an image file PIL can identify" in error
    assert "data.skip_bad_images=true" in error
    assert not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.parametrize("loader", ["dataloader", "device"])
def test_skip_bad_images_runs_on_the_readable_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture, loader: str
) -> None:
    from contrastkit.pipelines.pretrain import run_pretrain

    root = _image_folder(tmp_path / "folder", BAD_TRAIN)
    config = config_from_dict(_folder_config(tmp_path, root, skip_bad_images=True, loader=loader))
    result = run_pretrain(config)
    rows = read_metrics(result.run_dir / "metrics.csv")
    assert len(rows) == 40 // 8 and rows[-1]["knn_top1"]  # the 40 readable images, batch 8
    notes = [line for line in capsys.readouterr().err.splitlines() if "unreadable" in line]
    assert notes == [
        f"warning: skipped 2 unreadable image files of 42 under {root / 'train'} "
        "(data.skip_bad_images=true), e.g. class1/zz-empty.png: empty file (0 bytes)"
    ]


def test_unreadable_test_split_is_an_error_not_a_silent_monitor_off(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "folder", {"test/class0/zz-cut.png": b"\x89PNG\r\n\x1a\n"})
    config = config_from_dict(_folder_config(tmp_path, root))
    with pytest.raises(UnreadableImagesError, match=r"1 of 9 image files under .*test"):
        _prepare(config)
