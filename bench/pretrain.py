"""Pretrain throughput: the contrastkit pipeline against a torchvision-DataLoader baseline, same model and loss.

Cases: SimCLR with ResNet-18-CIFAR and ISD with MyResNet on real CIFAR-10 (../shared/data/cifar10).
"ours" is the real pipeline (`contrastkit.pipelines.pretrain`: data held on the device, views made
there by contrastkit.augment, accelerate, mixed precision from --precision), timed from the
per-step rows of its metrics.csv after --warmup steps. "baseline" is the usual recipe: PIL images,
torchvision transforms (the same SimCLR / weak+strong ISD recipes) in a DataLoader with --workers
CPU worker processes, the same method module (backbone, heads, loss) and SGD, timed per step the
same way. Prints a markdown table of seconds per step, images/s and the implied seconds per
50,000-image CIFAR-10 epoch, and ours / baseline. No assertions on time.

    python bench/pretrain.py                              # batch 512, 10 timed steps (a GPU run)
    python bench/pretrain.py --steps 2 --batch 64 --threads 1   # a short CPU check
    python bench/pretrain.py --precision bf16 --workers 8 --cases simclr_resnet18
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_name  # bench/ is on sys.path when a script runs
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

CIFAR_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10"
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR_TRAIN = 50_000


@dataclass
class Case:
    name: str
    method: str
    backbone: str
    augment: str


CASES = {
    "simclr_resnet18": Case("SimCLR ResNet-18-CIFAR", "simclr", "resnet18_cifar", "simclr_views"),
    "isd_myresnet": Case("ISD MyResNet", "isd", "myresnet", "isd_views"),
}


def pretrain_config(case: Case, batch: int, steps: int, output_dir: Path, data_dir: Path) -> dict:
    return {
        "method": {"name": case.method, "queue_size": 16384},
        "model": {"backbone": case.backbone, "channels_last": True},
        "data": {
            "dataset": "cifar10",
            "data_dir": str(data_dir),
            "augment": case.augment,
            "train_subset": batch * steps,
        },
        "optimizer": {"name": "sgd", "lr": 0.06},
        "train": {
            "epochs": 1,
            "batch_size": batch,
            "warmup_epochs": 0,
            "log_every": 1,
            "checkpoint_every": 0,
            "knn_every": 0,
            "output_dir": str(output_dir),
            "progress_bar": False,
        },
    }


def time_ours(case: Case, batch: int, steps: int, warmup: int, data_dir: Path) -> list[float]:
    """Seconds per optimizer step of the real pipeline, from its metrics.csv (warm-up steps dropped)."""
    from contrastkit.pipelines.config import config_from_dict
    from contrastkit.pipelines.metrics import read_metrics
    from contrastkit.pipelines.pretrain import run_pretrain

    with tempfile.TemporaryDirectory() as tmp:
        raw = pretrain_config(case, batch, warmup + steps, Path(tmp) / "run", data_dir)
        result = run_pretrain(config_from_dict(raw))
        rows = read_metrics(result.run_dir / "metrics.csv")
    return [batch / float(row["images_per_s"]) for row in rows[warmup:]]


class PilCifar(Dataset):
    """CIFAR-10 train images as PIL images, each returned as the recipe's list of view tensors."""

    def __init__(self, images: np.ndarray, views: list[T.Compose]) -> None:
        self.images, self.views = images, views

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> list[torch.Tensor]:
        image = Image.fromarray(self.images[index])
        return [view(image) for view in self.views]


def torchvision_views(recipe: str) -> list[T.Compose]:
    """The contrastkit.augment recipes written with torchvision transforms (one PIL image at a time)."""
    normalize = [T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)]
    jitter = T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)
    simclr = T.Compose(
        [
            T.RandomResizedCrop(32, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(),
            jitter,
            T.RandomGrayscale(0.2),
            *normalize,
        ]
    )
    if recipe == "simclr_views":
        return [simclr, simclr]
    weak = T.Compose(
        [T.RandomResizedCrop(32, scale=(0.2, 1.0)), T.RandomHorizontalFlip(), *normalize]
    )
    strong = T.Compose(
        [
            T.RandomResizedCrop(32, scale=(0.2, 1.0)),
            T.RandomHorizontalFlip(),
            jitter,
            T.RandomGrayscale(0.2),
            *normalize,
        ]
    )
    return [weak, strong]


def time_baseline(
    case: Case,
    batch: int,
    steps: int,
    warmup: int,
    workers: int,
    data_dir: Path,
    device: torch.device,
    precision: str,
) -> list[float]:
    """Seconds per step of a DataLoader + torchvision pipeline training the same method module."""
    from contrastkit.backbones import create_backbone
    from contrastkit.pipelines.config import config_from_dict
    from contrastkit.pipelines.methods import build_method
    from contrastkit.pipelines.optim import build_optimizer

    needed, parts = batch * (warmup + steps), []
    for i in range(1, 6):
        if sum(len(p) for p in parts) >= needed:
            break
        with np.load(data_dir / f"cifar10_train_{i}.npz") as archive:
            parts.append(archive["x"])
    images = np.concatenate(parts)[:needed]
    raw = pretrain_config(case, batch, warmup + steps, Path("unused"), data_dir)
    config = config_from_dict(raw)
    torch.manual_seed(0)
    method = build_method(config, create_backbone(case.backbone)).to(device)
    method = method.to(memory_format=torch.channels_last).train()
    optimizer = build_optimizer(method, config.optimizer, lr=0.06 * batch / 256)
    loader = DataLoader(
        PilCifar(images, torchvision_views(case.augment)),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    times = []
    start = time.perf_counter()
    for step, views in enumerate(loader):
        views = [
            v.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            for v in views
        ]
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = method(views, step=step).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # the same one host sync per step as the pipeline's log_every=1 rows
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return times[warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per pipeline")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed steps first (compile, autotune)"
    )
    parser.add_argument(
        "--batch", type=int, default=512, help="images per step (each gives 2 views)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="baseline DataLoader workers",
    )
    parser.add_argument(
        "--precision", choices=["no", "bf16", "fp16"], default="no", help="autocast dtype"
    )
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--data-dir", type=Path, default=CIFAR_DIR)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if not (args.data_dir / "cifar10_train_1.npz").is_file():
        raise SystemExit(f"CIFAR-10 npz files not found in {args.data_dir} (pass --data-dir)")
    # The pipeline reads its precision from accelerate's environment, like `accelerate launch`.
    os.environ["ACCELERATE_MIXED_PRECISION"] = args.precision
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"{cpu_name()}, {torch.get_num_threads()} threads"
    )
    print(
        f"device: {where}; torch {torch.__version__}; precision {args.precision}; batch {args.batch}; "
        f"{args.steps} timed steps after {args.warmup} warm-up; baseline workers {args.workers}"
    )
    print()
    print("| case | pipeline | s/step (median) | images/s | s/epoch (50k) | ours / baseline |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key in args.cases:
        case = CASES[key]
        ours = statistics.median(
            time_ours(case, args.batch, args.steps, args.warmup, args.data_dir)
        )
        base = statistics.median(
            time_baseline(
                case,
                args.batch,
                args.steps,
                args.warmup,
                args.workers,
                args.data_dir,
                device,
                args.precision,
            )
        )
        epoch_steps = CIFAR_TRAIN // args.batch
        for label, seconds in (("ours", ours), (f"baseline ({args.workers} workers)", base)):
            ratio = f"{base / ours:.2f}x" if label == "ours" else ""
            print(
                f"| {case.name} | {label} | {seconds:.3f} | {args.batch / seconds:,.0f} | "
                f"{seconds * epoch_steps:,.1f} | {ratio} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
