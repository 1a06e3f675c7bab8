"""The probe's command line: its argparse parser, the per-mode defaults, the checks of the parsed
options, and the options resolved against the checkpoint (which data, which training settings).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch
from torch import nn

from contrastkit.pipelines.data import DATASET_NAMES
from contrastkit.pipelines.evaluation.knn import check_knn_k
from contrastkit.pipelines.evaluation.linear_probe import SOLVER_DEFAULT_LR, SOLVERS
from contrastkit.pipelines.evaluation.pretrained import (
    CHECKPOINT_EXPECTED,
    PretrainedCheckpoint,
    build_backbone,
)
from contrastkit.pipelines.preflight import check_writable_dir, is_writable_dir
from contrastkit.pipelines.run_files import probe_dir_name

# Per probe mode (see `probe_mode`): what --epochs, --lr and --weight-decay default to.
DEFAULT_EPOCHS = {"linear": 100, "augment": 30, "finetune": 30}
DEFAULT_LR = {"augment": 0.1, "finetune": 0.05}
DEFAULT_WEIGHT_DECAY = {"linear": 0.0, "augment": 0.0, "finetune": 5e-4}
DEFAULT_KNN_K = (20, 200)  # --knn-k when not given


def probe_mode(args: argparse.Namespace) -> str:
    """The mode the options ask for: "linear" (cached features), "augment" (frozen backbone,
    augmented views) or "finetune" (backbone trained too)."""
    return "finetune" if args.finetune else ("augment" if args.augment else "linear")


def build_parser() -> argparse.ArgumentParser:
    """The `contrastkit-probe` parser (`main` parses with it; `check_args` checks the result)."""
    parser = argparse.ArgumentParser(
        prog="contrastkit-probe",
        description=(
            "Evaluate a pretrained backbone: linear probe (frozen) or fine-tuning, weighted kNN, "
            "t-SNE and a nearest-neighbour grid. Appends a row to OUTPUT_DIR/results.csv and "
            "writes metrics.csv, PNGs and report.md there."
        ),
    )
    parser.add_argument(
        "--checkpoint", required=True, help=f"{CHECKPOINT_EXPECTED} (the run's latest is used)"
    )
    parser.add_argument(
        "--data-dir", help="dataset location (default: the pretrain config's data.data_dir)"
    )
    parser.add_argument(
        "--output-dir", help="where results and pictures go (default: <run dir>/probe-<dataset>)"
    )
    parser.add_argument(
        "--cache-dir",
        help="where the feature caches go (default: the checkpoint folder, or the output folder "
        "when the checkpoint folder is not writable)",
    )
    parser.add_argument(
        "--data",
        "--dataset",
        dest="data",
        choices=DATASET_NAMES,
        help="dataset to probe on (default: the pretrain dataset; another one is a transfer probe)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help="image side in pixels (default: the pretrain data.image_size)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help=f"training epochs (default: {DEFAULT_EPOCHS['linear']} linear, "
        f"{DEFAULT_EPOCHS['finetune']} with --augment or --finetune); L-BFGS iterations for --solver lbfgs",
    )
    parser.add_argument(
        "--lr",
        type=float,
        help="learning rate (default: 0.1 sgd, 1.0 lbfgs, 0.05 for the head when fine-tuning)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=256, help="batch size per process (default: 256)"
    )
    parser.add_argument(
        "--weight-decay", type=float, help="weight decay (default: 0; 5e-4 when fine-tuning)"
    )
    parser.add_argument(
        "--solver", choices=SOLVERS, default="sgd", help="linear probe solver (default: sgd)"
    )
    parser.add_argument(
        "--augment",
        action="store_true",
        help="train the linear head on features of freshly augmented views each epoch instead of cached ones",
    )
    parser.add_argument(
        "--finetune",
        action="store_true",
        help="train the whole network (backbone at lr * --backbone-lr-scale)",
    )
    parser.add_argument(
        "--backbone-lr-scale",
        type=float,
        default=0.1,
        help="backbone lr / head lr when fine-tuning (default: 0.1)",
    )
    parser.add_argument(
        "--label-fraction",
        type=float,
        default=1.0,
        help="share of train labels used, class-stratified and seeded, e.g. 0.01, 0.1 (default: 1.0)",
    )
    parser.add_argument(
        "--train-subset",
        type=int,
        help="probe on a class-balanced seeded subset of N train samples",
    )
    parser.add_argument(
        "--test-subset",
        type=int,
        help="evaluate on a class-balanced seeded subset of N test samples",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of subsets, classifier init, shuffles (default: 0)",
    )
    parser.add_argument(
        "--knn-k",
        type=int,
        nargs="+",
        help="kNN neighbour counts, each at most the labelled train samples (default: 20 200, "
        "capped at the labelled train samples)",
    )
    parser.add_argument(
        "--knn-temperature", type=float, default=0.1, help="kNN vote temperature (default: 0.1)"
    )
    parser.add_argument(
        "--tsne-points", type=int, default=5000, help="t-SNE sample size (default: 5000)"
    )
    parser.add_argument("--no-tsne", action="store_true", help="skip the t-SNE picture")
    parser.add_argument("--no-nn-grid", action="store_true", help="skip the nearest-neighbour grid")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="probe the checkpoint's network freshly initialized (seeded by --seed) instead of "
        "its trained weights: the baseline its pretraining must beat (results.csv: method "
        "random_init, epochs 0; default output <run dir>/probe-<dataset>-random-init)",
    )
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Raise ValueError naming the option when a parsed value is out of range or a combination is invalid."""
    if not 0.0 < args.label_fraction <= 1.0:
        raise ValueError(f"--label-fraction must be in (0, 1], got {args.label_fraction}")
    for name in (
        "epochs",
        "batch_size",
        "train_subset",
        "test_subset",
        "image_size",
        "tsne_points",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("lr", "knn_temperature", "backbone_lr_scale"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    if args.weight_decay is not None and args.weight_decay < 0:
        raise ValueError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.knn_k is not None and any(k < 1 for k in args.knn_k):
        raise ValueError(f"--knn-k values must be >= 1, got {args.knn_k}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if (args.augment or args.finetune) and args.solver != "sgd":
        raise ValueError(
            f"--solver {args.solver} works on cached features only; --augment and --finetune train with sgd"
        )


def training_options(args: argparse.Namespace, mode: str) -> tuple[int, float, float]:
    """(epochs, lr, weight_decay) of the probe's classifier training: the options, else the
    mode's defaults (the linear probe's lr default is its solver's)."""
    epochs = args.epochs or DEFAULT_EPOCHS[mode]
    if mode == "linear":
        lr = args.lr if args.lr is not None else SOLVER_DEFAULT_LR.get(args.solver, 0.0)
    else:
        lr = args.lr or DEFAULT_LR[mode]
    weight_decay = DEFAULT_WEIGHT_DECAY[mode] if args.weight_decay is None else args.weight_decay
    return epochs, lr, weight_decay


def data_source(args: argparse.Namespace, checkpoint: PretrainedCheckpoint) -> tuple[str, str]:
    """(dataset name, data folder) to probe on: --data / --data-dir, else the checkpoint's pretrain
    data. Another dataset than the pretrain one is a transfer probe; its inputs must be of the kind
    (image or tabular) the backbone was pretrained on."""
    name = args.data or checkpoint.dataset
    if name not in DATASET_NAMES:
        raise ValueError(
            f"the checkpoint's data.dataset is {name!r}; pass --data, one of {DATASET_NAMES}"
        )
    if ("tabular" if name == "tabular" else "image") != checkpoint.input_kind:
        raise ValueError(
            f"the checkpoint's backbone {checkpoint.backbone_name!r} was pretrained on "
            f"{checkpoint.dataset!r} ({checkpoint.input_kind} inputs); --data {name!r} cannot go through it"
        )
    if args.data_dir is not None:
        return name, args.data_dir
    if name != checkpoint.dataset or not checkpoint.data_dir:
        raise ValueError(
            f"--data-dir is required for --data {name!r} (the pretrain data was {checkpoint.dataset!r})"
        )
    return name, checkpoint.data_dir


def probe_folders(
    args: argparse.Namespace, checkpoint: PretrainedCheckpoint, dataset: str, *, is_main: bool
) -> tuple[Path, Path]:
    """(output folder, feature cache folder), both checked to be writable folders (and created)
    before anything heavy starts: a PathProblem (ValueError) naming the option and path otherwise.

    The output folder is --output-dir, else <run dir>/probe-<dataset>. The cache folder is
    --cache-dir, else the checkpoint folder, else (a read-only checkpoint folder, said in one
    note on the main process) the output folder.
    """
    if args.output_dir:
        output_dir = check_writable_dir(args.output_dir, "--output-dir")
    else:
        name = probe_dir_name(dataset) + ("-random-init" if args.random_init else "")
        default = checkpoint.run_dir / name
        output_dir = check_writable_dir(default, "the probe's output folder (--output-dir)")
    if args.cache_dir:
        return output_dir, check_writable_dir(args.cache_dir, "--cache-dir")
    if is_writable_dir(checkpoint.path):
        return output_dir, checkpoint.path
    if is_main:
        print(
            f"contrastkit-probe: the checkpoint folder {str(checkpoint.path)!r} is not writable; "
            f"caching features in {str(output_dir)!r} (choose another folder with --cache-dir)",
            file=sys.stderr,
            flush=True,
        )
    return output_dir, output_dir


def resolve_knn_k(args: argparse.Namespace, bank_size: int, *, is_main: bool) -> argparse.Namespace:
    """A copy of `args` whose knn_k is the sorted k values of the probe's kNN among `bank_size`
    labelled train samples.

    --knn-k as given, each checked to be at most `bank_size` (ValueError naming the option and
    both numbers otherwise, before any feature is extracted); without it, DEFAULT_KNN_K capped
    at `bank_size`, with a one-line note (main process) when the cap applies.
    """
    if args.knn_k is not None:
        for k in args.knn_k:
            check_knn_k(k, bank_size, k_name="--knn-k", bank="labelled train samples",
                        fix=f"use --knn-k values <= {bank_size}")  # fmt: skip
        return argparse.Namespace(**{**vars(args), "knn_k": sorted(set(args.knn_k))})
    if max(DEFAULT_KNN_K) > bank_size and is_main:
        print(
            f"contrastkit-probe: kNN with k={min(max(DEFAULT_KNN_K), bank_size)} instead of the "
            f"default {max(DEFAULT_KNN_K)}: there are {bank_size} labelled train samples",
            file=sys.stderr,
            flush=True,
        )
    capped = sorted({min(k, bank_size) for k in DEFAULT_KNN_K})
    return argparse.Namespace(**{**vars(args), "knn_k": capped})


def probe_backbone(
    args: argparse.Namespace, checkpoint: PretrainedCheckpoint, device: torch.device
) -> tuple[nn.Module, str | None]:
    """The backbone to probe, on `device`, and for --random-init the SHA-256 of its fresh weights
    (in no file: the feature caches are keyed and named with it, apart from the trained ones)."""
    if not args.random_init:
        return build_backbone(checkpoint).to(device), None
    backbone = build_backbone(checkpoint, random_init=args.seed)
    digest = hashlib.sha256(f"random-init {checkpoint.backbone_name} seed {args.seed}".encode())
    for name, tensor in backbone.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return backbone.to(device), digest.hexdigest()
