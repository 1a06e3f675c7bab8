"""Views/s of the SimCLR recipe: contrastkit.augment against torchvision v2 and kornia, same images.

Rows: ours on the CPU (and on CUDA when present); torchvision.transforms.v2 one image at a time
in this process, and in a DataLoader with 2 and 8 workers; kornia's AugmentationSequential on the
whole batch. Columns: 32x32 (batch 512) and 96x96 (batch 256). Images are the real CIFAR-10 test
images when ../shared/data/cifar10 is there (upsampled bilinearly to 96 px for the 96 column),
random ones otherwise. On CUDA it also prints the augmentation share of a SimCLR ResNet-18 step.
Prints markdown: views per wall-clock second and, for in-process rows, per CPU-second of this
process (robust on a busy shared machine). Every row, ours and theirs alike, is the best of the
same --reps timed repetitions after one untimed warm-up (a DataLoader row repeats whole epochs).
torch runs --threads threads (default: all cores), printed in the header.

    python bench/augment.py                     # full table, about 2 minutes on 2 CPU cores
    python bench/augment.py --reps 1 --workers 2 --threads 1
    python bench/augment.py --skip-dataloader
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _machine import add_threads_option, apply_threads, cpu_name  # bench/ is on sys.path

from contrastkit.augment import make_views

CIFAR_TEST = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10" / "cifar10_test.npz"
)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def load_images(n: int, size: int) -> tuple[torch.Tensor, str]:
    """(n, 3, size, size) uint8 images and where they came from."""
    if CIFAR_TEST.exists():
        import numpy as np

        with np.load(CIFAR_TEST) as data:
            images = torch.from_numpy(data["x"][:n]).permute(0, 3, 1, 2).contiguous()
        source = "CIFAR-10 test images"
        if size != 32:
            images = F.interpolate(
                images.float(), size=(size, size), mode="bilinear", antialias=False
            )
            images = images.round().clamp(0, 255).to(torch.uint8)
            source += f", upsampled to {size} px"
        return images, source
    generator = torch.Generator().manual_seed(0)
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator
    ), "random images"


def best_seconds(
    fn: Callable[[], object], reps: int, sync: Callable[[], None] = lambda: None
) -> tuple[float, float]:
    """(best wall-clock seconds, best CPU seconds of this process) over `reps` calls after a warm-up.

    CPU seconds count only this process's work, so they stay meaningful on a busy shared machine.
    """
    fn()
    sync()
    best_wall = best_cpu = float("inf")
    for _ in range(reps):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        sync()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu


Rate = tuple[
    float, float | None
]  # (views per second, views per CPU-second of this process or None)


def _rate(views: int, seconds: tuple[float, float]) -> Rate:
    return views / seconds[0], views / seconds[1]


def torchvision_simclr(size: int):
    import torchvision.transforms.v2 as T

    blur = (
        [T.RandomApply([T.GaussianBlur(int(0.1 * size) // 2 * 2 + 1, (0.1, 2.0))], p=0.5)]
        if size >= 64
        else []
    )
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            *blur,
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(CIFAR_MEAN, CIFAR_STD),
        ]
    )


class TwoViewDataset(torch.utils.data.Dataset):
    """Image i -> two torchvision views of it, as a per-image SSL pipeline feeds a training loop."""

    def __init__(self, images: torch.Tensor, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = self.images[index]
        return self.transform(image), self.transform(image)


def kornia_simclr(size: int):
    import kornia.augmentation as K

    ops = [
        K.RandomResizedCrop((size, size), scale=(0.08, 1.0)),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
    ]
    if size >= 64:
        k = int(0.1 * size) // 2 * 2 + 1
        ops.append(K.RandomGaussianBlur((k, k), (0.1, 2.0), p=0.5))
    ops.append(K.Normalize(torch.tensor(CIFAR_MEAN), torch.tensor(CIFAR_STD)))
    return K.AugmentationSequential(*ops)


def bench_ours(images: torch.Tensor, device: str, reps: int) -> Rate:
    batch = images.to(device)
    views = make_views("simclr_views", images.shape[-1], seed=0)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rate = _rate(2 * len(images), best_seconds(lambda: views(batch), reps, sync))
    return rate if device == "cpu" else (rate[0], None)


def bench_torchvision_loop(images: torch.Tensor, reps: int) -> Rate:
    transform = torchvision_simclr(images.shape[-1])

    def run() -> None:
        for image in images:
            transform(image)
            transform(image)

    return _rate(2 * len(images), best_seconds(run, reps))


def bench_torchvision_loader(images: torch.Tensor, workers: int, reps: int) -> Rate:
    """Views/s over the best of `reps` epochs of max(4, 2 * workers) batches, after a first epoch
    that starts the (persistent) workers."""
    batches = max(4, 2 * workers)
    dataset = TwoViewDataset(images.repeat(batches, 1, 1, 1), torchvision_simclr(images.shape[-1]))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=len(images), num_workers=workers, persistent_workers=True
    )

    def epoch() -> None:
        for _ in loader:
            pass

    wall, _ = best_seconds(epoch, reps)
    return 2 * len(dataset) / wall, None


def bench_kornia(images: torch.Tensor, reps: int) -> Rate:
    augment = kornia_simclr(images.shape[-1])

    def run() -> None:
        batch = images.float() / 255
        augment(batch)
        augment(batch)

    return _rate(2 * len(images), best_seconds(run, reps))


def resnet18_step_share(images: torch.Tensor, reps: int) -> tuple[float, float]:
    """(augmentation ms, ResNet-18 bf16 forward+backward ms) of one SimCLR CIFAR step on CUDA."""
    import torchvision

    model = torchvision.models.resnet18(num_classes=128)
    model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = torch.nn.Identity()
    model = model.cuda().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = images.cuda()
    views = make_views("simclr_views", images.shape[-1], seed=0)
    augment_s = best_seconds(lambda: views(batch), reps, torch.cuda.synchronize)[0]
    inputs = torch.cat(views(batch)).contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(inputs).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_s = best_seconds(step, reps, torch.cuda.synchronize)[0]
    return augment_s * 1e3, step_s * 1e3


def measure_all(images: torch.Tensor, args: argparse.Namespace) -> dict[str, Rate]:
    """Views/s of every row for one batch of images."""
    results = {
        "contrastkit.augment, CPU, batched": bench_ours(images, "cpu", args.reps),
        "torchvision v2, per image, 1 process": bench_torchvision_loop(images, args.reps),
        "kornia AugmentationSequential, CPU, batched": bench_kornia(images, args.reps),
    }
    if not args.skip_dataloader:
        for workers in args.workers:
            results[f"torchvision v2, DataLoader, {workers} workers"] = bench_torchvision_loader(
                images, workers, args.reps
            )
    if torch.cuda.is_available():
        results["contrastkit.augment, CUDA, batched"] = bench_ours(images, "cuda", args.reps)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reps", type=int, default=3, help="timed repetitions per row (best is kept)"
    )
    parser.add_argument(
        "--workers", type=int, nargs="*", default=[2, 8], help="DataLoader worker counts"
    )
    add_threads_option(parser)
    parser.add_argument("--skip-dataloader", action="store_true")
    args = parser.parse_args()
    if args.reps < 1:
        parser.error(f"--reps must be >= 1, got {args.reps}")
    apply_threads(args.threads)
    # 8 workers on a 2-core machine is the point of that row, not a mistake to warn about.
    warnings.filterwarnings("ignore", message="This DataLoader will create")

    import kornia
    import torchvision

    settings = [(32, 512), (96, 256)]
    rows: dict[str, list[Rate]] = {}
    sources = []
    for size, batch in settings:
        images, source = load_images(batch, size)
        sources.append(f"{size} px: {source}")
        for name, rate in measure_all(images, args).items():
            rows.setdefault(name, []).append(rate)

    baseline = rows["torchvision v2, per image, 1 process"]
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.1f}; "
        f"GPU: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}"
    )
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, kornia {kornia.__version__}"
    )
    print("images: " + "; ".join(sources))
    print()
    header = " | ".join(
        f"{s}x{s} views/s (batch {b}) | vs tv | {s}x{s} views/CPU-s | vs tv" for s, b in settings
    )
    print(f"| SimCLR views | {header} |")
    print("|---" * (1 + 4 * len(settings)) + "|")
    for name, rates in rows.items():
        cells = []
        for (wall, cpu), (base_wall, base_cpu) in zip(rates, baseline):
            cells += [f"{wall:,.0f}", f"{wall / base_wall:.1f}x"]
            if cpu is None or base_cpu is None:
                cells += ["n/a", ""]
            else:
                cells += [f"{cpu:,.0f}", f"{cpu / base_cpu:.1f}x"]
        print(f"| {name} | {' | '.join(cells)} |")

    if torch.cuda.is_available():
        images, _ = load_images(512, 32)
        augment_ms, step_ms = resnet18_step_share(images, args.reps)
        print()
        print(
            f"CUDA SimCLR CIFAR step, batch 512: augmentation {augment_ms:.2f} ms, "
            f"ResNet-18 bf16 forward+backward+SGD {step_ms:.2f} ms, "
            f"augmentation = {100 * augment_ms / (augment_ms + step_ms):.1f}% of the step"
        )


if __name__ == "__main__":
    main()
