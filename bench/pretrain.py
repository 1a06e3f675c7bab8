"""Pretrain throughput: the contrastkit pipeline against loops that do the same work, same model and loss.

Cases: SimCLR with ResNet-18-CIFAR and ISD with MyResNet, on real CIFAR-10 (../shared/data/cifar10)
or, with --synthetic, random uint8 images of CIFAR's shape (timing does not depend on content).
- "ours" is the real pipeline (`contrastkit.pipelines.pretrain`: data held on the device, views
  made there by contrastkit.augment, accelerate, channels_last, mixed precision from --precision,
  `model.compile` with --compile).
- "baseline" is the usual recipe: PIL images and torchvision transforms of the same recipes in a
  DataLoader with --workers processes, feeding the same model the pipeline builds, and doing what
  one pipeline step does: the optimizer step, the warm-up + cosine (or step) LR schedule, the
  method's EMA update, the running sums of the logged values, a GradScaler for fp16
  (`_pretrain_loops.py`).
- "lightly-style" (SimCLR only, when lightly is importable): lightly's SimCLRTransform on
  DataLoader workers and lightly.loss.NTXentLoss, the same ResNet, head, optimizer and schedule,
  one forward per view as lightly's examples do.

Every loop runs --warmup + --steps optimizer steps over the same images and reads its logged
values on the host (one device sync) at the same steps, every --warmup steps and at the last;
the time of the --steps steps after the warm-up is what is reported. Prints a markdown table of
seconds per step, images/s, seconds per 50,000-image CIFAR-10 epoch, and baseline / ours.
No assertions on time.

    python bench/pretrain.py                                  # batch 512, 40 + 57 steps: one epoch
    python bench/pretrain.py --steps 2 --warmup 1 --batch 32 --workers 1 --threads 1   # CPU check
    python bench/pretrain.py --precision bf16 --workers 16 --cases simclr_resnet18 --synthetic
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import torch
from _machine import add_threads_option, apply_threads, cpu_name  # bench/ is on sys.path
from _pretrain_cases import CASES, CIFAR_DIR, Timing, cifar_images, synthetic_images, time_ours
from _pretrain_loops import time_baseline, time_lightly_style


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=57, help="timed steps per loop")
    parser.add_argument(
        "--warmup", type=int, default=40, help="untimed steps first (compile, autotune, workers)"
    )
    parser.add_argument("--batch", type=int, default=512, help="images per step (2 views each)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers (all cores)"
    )
    parser.add_argument(
        "--precision", choices=["no", "bf16", "fp16"], default="no", help="autocast dtype"
    )
    parser.add_argument("--compile", action="store_true", help="ours with model.compile=true")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--data-dir", type=Path, default=CIFAR_DIR)
    parser.add_argument("--synthetic", action="store_true", help="random CIFAR-shaped images")
    add_threads_option(parser)
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 1 or args.batch < 1:
        parser.error("--steps, --warmup and --batch must be >= 1")
    threads = apply_threads(args.threads)
    count = args.batch * (args.warmup + args.steps)
    if args.synthetic:
        images, source = synthetic_images(count), "synthetic uint8 CIFAR-shaped images"
    else:
        if not (args.data_dir / "cifar10_train_1.npz").is_file():
            parser.error(
                f"no CIFAR-10 npz files in {args.data_dir} (pass --data-dir or --synthetic)"
            )
        images, source = cifar_images(args.data_dir, count), f"CIFAR-10 from {args.data_dir}"
    # The pipeline reads its precision from accelerate's environment, like `accelerate launch`.
    os.environ["ACCELERATE_MIXED_PRECISION"] = args.precision
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name() if device.type == "cuda" else cpu_name()
    print(
        f"device: {where}; torch {torch.__version__}; torch threads {threads}; precision "
        f"{args.precision}; batch {args.batch}; {args.steps} timed steps after {args.warmup} "
        f"warm-up on every loop; workers {args.workers}; {source}"
    )
    print()
    print("| case | loop | s/step | images/s | s/epoch (50k) | warm-up s | baseline / this |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for key in args.cases:
        case = CASES[key]
        loops: dict[str, Callable[[], Timing]] = {
            "ours" + (", compiled" if args.compile else ""): lambda c=case: time_ours(
                c, images, args.batch, args.warmup, compile_model=args.compile
            ),
            f"baseline ({args.workers} workers)": lambda c=case: time_baseline(
                c, images, args.batch, args.warmup, args.workers, device, args.precision
            ),
        }
        if case.method == "simclr":
            loops[f"lightly-style ({args.workers} workers)"] = lambda: time_lightly_style(
                images, args.batch, args.warmup, args.workers, device, args.precision
            )
        timings: dict[str, Timing | str] = {}
        for name, run in loops.items():
            try:
                timings[name] = run()
            except ImportError as error:  # lightly is a bench-only dependency
                timings[name] = f"not run: {error}"
        baseline = timings[f"baseline ({args.workers} workers)"]
        for name, timing in timings.items():
            if isinstance(timing, str):
                print(f"| {case.name} | {name} | {timing} | | | | |", flush=True)
                continue
            ratio = (
                f"{baseline.step_s / timing.step_s:.2f}x" if isinstance(baseline, Timing) else ""
            )
            print(
                f"| {case.name} | {name} | {timing.step_s:.3f} | {timing.images_per_s:,.0f} | "
                f"{timing.epoch_s:,.1f} | {timing.warmup_s:.1f} | {ratio} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
