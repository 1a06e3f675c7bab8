"""Forward+backward throughput (images/s) of the CIFAR backbones in contrastkit.backbones.

MyResNet, ResNet-18-CIFAR and timm resnet18 with the CIFAR stem, each with a 10-class linear
head and cross-entropy on random labels: fp32 on CPU; bf16 autocast + channels_last on CUDA,
eager and compiled (the backbone alone, in place, as the pipeline's `model.compile` does). Every
row runs the same --warmup untimed and --steps timed steps. torch runs --threads threads
(default: all cores), printed in the header. Prints a markdown table. No optimizer step: this
times the model only. No assertions on time.

    python bench/backbones.py                   # batch 256, 10 timed steps per row
    python bench/backbones.py --batch 64 --steps 3 --device cpu --threads 1
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import torch
from _machine import add_threads_option, apply_threads, cpu_name  # bench/ is on sys.path
from torch import nn

from contrastkit.backbones import LinearClassifier, create_backbone

MODELS = {
    "MyResNet": ("myresnet", {}),
    "ResNet-18-CIFAR": ("resnet18_cifar", {}),
    "timm resnet18 + cifar stem": ("timm:resnet18", {"cifar_stem": True}),
}


@dataclass
class Setting:
    device: str
    dtype: torch.dtype
    channels_last: bool
    compiled: bool

    def label(self) -> str:
        parts = [self.device, str(self.dtype).removeprefix("torch.")]
        if self.channels_last:
            parts.append("channels_last")
        parts.append("compiled" if self.compiled else "eager")
        return ", ".join(parts)


@dataclass
class BackboneTiming:
    """warmup_s: wall seconds of the untimed steps (compilation happens there); step_s: mean
    seconds per forward+backward step over the timed steps."""

    warmup_s: float
    step_s: float


def time_setting(
    name: str, setting: Setting, batch: int, size: int, steps: int, warmup: int
) -> BackboneTiming:
    """Time `steps` forward+backward steps of `name` + a linear head on `batch` random images
    of `size` px, after `warmup` untimed steps (at least one when compiled)."""
    backbone_name, kwargs = MODELS[name]
    torch.manual_seed(0)
    backbone = create_backbone(backbone_name, **kwargs)
    model = nn.Sequential(backbone, LinearClassifier(backbone.num_features, 10))
    model = model.to(setting.device).train()
    images = torch.randn(batch, 3, size, size, device=setting.device)
    labels = torch.randint(0, 10, (batch,), device=setting.device)
    if setting.channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    if setting.compiled:
        backbone.compile()  # in place, the backbone alone: what model.compile does in the pipeline
    use_autocast = setting.dtype != torch.float32

    def step() -> None:
        with torch.autocast(setting.device, dtype=setting.dtype, enabled=use_autocast):
            loss = nn.functional.cross_entropy(model(images).float(), labels)
        loss.backward()
        for p in model.parameters():
            p.grad = None

    def sync() -> None:
        if setting.device == "cuda":
            torch.cuda.synchronize()

    sync()
    start = time.perf_counter()
    for _ in range(max(warmup, 1 if setting.compiled else 0)):
        step()
    sync()
    warm_end = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return BackboneTiming(warm_end - start, (time.perf_counter() - warm_end) / steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row")
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed steps (compile happens here)"
    )
    parser.add_argument("--size", type=int, default=32, help="image height and width")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled CUDA rows")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    add_threads_option(parser)
    args = parser.parse_args()
    threads = apply_threads(args.threads)
    for flag in ("batch", "steps", "size"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag} must be > 0, got {getattr(args, flag)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda given but torch.cuda.is_available() is False")
        torch.backends.cudnn.benchmark = True
        settings = [Setting("cuda", torch.bfloat16, True, False)]
        if not args.no_compile:
            settings.append(Setting("cuda", torch.bfloat16, True, True))
        machine = torch.cuda.get_device_name()
    else:
        settings = [Setting("cpu", torch.float32, False, False)]
        machine = cpu_name()

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(
        f"machine: {machine}; torch {torch.__version__}; torch threads {threads}; "
        f"load average {load}"
    )
    print(
        f"batch {args.batch}, {args.size}x{args.size}, {args.steps} timed steps after {args.warmup} warm-up"
    )
    print()
    print("| model | setting | ms / step | images / s | warm-up s |")
    print("|---|---|---:|---:|---:|")
    for name in args.models:
        for setting in settings:
            timing = time_setting(name, setting, args.batch, args.size, args.steps, args.warmup)
            print(
                f"| {name} | {setting.label()} | {timing.step_s * 1e3:,.0f} | "
                f"{args.batch / timing.step_s:,.0f} | {timing.warmup_s:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
