"""Evaluate a pretrained backbone: frozen linear probe, fine-tuning, weighted kNN, t-SNE and nearest neighbours.

`accelerate launch packages/pipelines/probe.py --checkpoint RUN --data-dir DIR --output-dir DIR` reads a
pretrain checkpoint and writes results.csv (one row appended per run), metrics.csv, the PNGs and report.md.
The pieces live in `contrastkit.pipelines.evaluation`; this module runs them in order, mode by mode.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor, nn

from contrastkit.pipelines.atomic import save_torch_atomic, write_text_atomic
from contrastkit.pipelines.data import (
    AUGMENT_DATASET,
    InMemoryDataset,
    balanced_subset,
    load_dataset,
)
from contrastkit.pipelines.evaluation import (
    RANDOM_INIT,
    PretrainedCheckpoint,
    StandardizedLinear,
    ViewTrainingResult,
    append_results,
    check_input_compatibility,
    checkpoint_features,
    identity_transform,
    knn_accuracy,
    label_fraction_indices,
    load_checkpoint,
    nearest_neighbours,
    probe_summary_markdown,
    shared_standardization,
    train_linear_probe,
    train_on_views,
    tsne_embedding,
    view_size,
    write_history_csv,
    write_probe_report,
)
from contrastkit.pipelines.preflight import describe_os_error
from contrastkit.pipelines.probe_cli import (
    build_parser,
    check_args,
    data_source,
    probe_backbone,
    probe_folders,
    probe_mode,
    resolve_knn_k,
    training_options,
)
from contrastkit.pipelines.run_files import (
    CLASSIFIER_FILE,
    FINETUNED_FILE,
    METRICS_FILE,
    MODEL_SUMMARY_FILE,
    NN_GRID_FILE,
    PROBE_CURVES_FILE,
    REPORT_FILE,
    RESULTS_FILE,
    TSNE_FILE,
)
from contrastkit.pipelines.training.accelerator import leave_process_group, make_accelerator

_NN_QUERIES, _NN_NEIGHBOURS = 10, 8  # the neighbour grid: query images, neighbours of each


@dataclass
class ProbeData:
    """The data a probe runs on and how its inputs reach the backbone.

    `name` differs from the checkpoint's data.dataset for a transfer probe. The train/test splits
    are in memory (images uint8 (N, C, H, W) or tabular (N, F)); `transform` is the identity view
    with the pretraining normalization (`view_dataset`), in channels_last when the run used it.
    """

    name: str
    data_dir: str
    train: InMemoryDataset
    test: InMemoryDataset
    view_dataset: str
    channels_last: bool
    transform: Callable[[Tensor], Tensor]


@dataclass
class ProbeOutcome:
    """What `run_probe` did on the main process: the results row appended, and where."""

    row: dict[str, Any]
    output_dir: Path


# --------------------------------------------------------------------------------------------
# Transfer: which data, checked against what the backbone was pretrained on


def prepare_data(
    args: argparse.Namespace,
    checkpoint: PretrainedCheckpoint,
    source: tuple[str, str],
    backbone: nn.Module,
) -> ProbeData:
    """Load the splits of `source` (name, folder) and the view they go through; `backbone` goes
    channels_last if the pretrain run did."""
    name, data_dir = source
    options = checkpoint.tabular_options if name == "tabular" else {}
    image_size = None if name == "tabular" else (args.image_size or checkpoint.image_size)
    splits = []
    for split, subset in (("train", args.train_subset), ("test", args.test_subset)):
        data = load_dataset(name, data_dir, split, image_size=image_size, **options)
        if subset is not None and subset < len(data):
            data = data.subset(balanced_subset(data.labels, subset, args.seed))
        splits.append(data)
    train, test = splits
    # Inputs are normalized as in pretraining: the statistics the backbone's first layer saw.
    view_dataset = AUGMENT_DATASET[checkpoint.dataset] if train.kind == "image" else "tabular"
    channels_last = train.kind == "image" and bool(checkpoint.get("model", "channels_last", False))
    if channels_last:
        backbone.to(memory_format=torch.channels_last)
    transform = identity_transform(view_dataset, view_size(train), channels_last)
    check_input_compatibility(backbone, checkpoint, train, name, transform)
    return ProbeData(name, data_dir, train, test, view_dataset, channels_last, transform)


# --------------------------------------------------------------------------------------------
# The modes: linear (cached features), augment / finetune (views through the backbone), kNN


@dataclass
class _Trained:
    """A trained classifier head and how it got there (for metrics.csv and the results row)."""

    result: ViewTrainingResult
    epochs: int
    lr: float


def linear_mode(
    args: argparse.Namespace,
    data: ProbeData,
    features: dict[str, Tensor],
    labelled: Tensor,
    accelerator: Accelerator,
) -> _Trained | None:
    """The linear probe on the cached features, on the main process (None on the others)."""
    epochs, lr, weight_decay = training_options(args, "linear")
    device, train, test = accelerator.device, data.train, data.test
    result = None
    if accelerator.is_main_process:
        result = train_linear_probe(
            features["train"][labelled].to(device), train.labels[labelled].to(device),
            features["test"].to(device), test.labels.to(device), train.num_classes,
            epochs=epochs, lr=args.lr, batch_size=args.batch_size, weight_decay=weight_decay,
            solver=args.solver, seed=args.seed, progress=not args.no_progress,
        )  # fmt: skip
    accelerator.wait_for_everyone()
    if result is None:
        return None
    # The same classifier as a module that standardizes raw features, as the other modes save.
    head = StandardizedLinear(result.feature_mean, result.feature_std, train.num_classes, args.seed)
    head.classifier.linear.load_state_dict(result.classifier.state_dict())
    return _Trained(ViewTrainingResult(head, result.history, result.top1, result.top5), epochs, lr)


def view_mode(
    args: argparse.Namespace,
    mode: str,
    data: ProbeData,
    features: dict[str, Tensor],
    labelled: Tensor,
    backbone: nn.Module,
    accelerator: Accelerator,
) -> _Trained | None:
    """--augment (frozen backbone) or --finetune: every process trains on fresh augmented views;
    the head starts from the main process's standardization of the labelled train features."""
    epochs, lr, weight_decay = training_options(args, mode)
    main_process = accelerator.is_main_process
    dim = features["train"].shape[1] if main_process else int(getattr(backbone, "num_features", 0))
    train_features = features["train"][labelled] if main_process else None
    mean, std = shared_standardization(train_features, dim, accelerator)
    result = train_on_views(
        backbone,
        StandardizedLinear(mean, std, data.train.num_classes, args.seed, track_batches=args.finetune),
        data.train.subset(labelled), data.test, accelerator=accelerator, finetune=args.finetune,
        epochs=epochs, lr=lr, batch_size=args.batch_size, weight_decay=weight_decay,
        seed=args.seed, view_dataset=data.view_dataset, backbone_lr_scale=args.backbone_lr_scale,
        test_features=features.get("test"), channels_last=data.channels_last,
        progress=main_process and not args.no_progress,
    )  # fmt: skip
    return _Trained(result, epochs, lr) if main_process else None


def knn_mode(
    args: argparse.Namespace,
    data: ProbeData,
    features: dict[str, Tensor],
    labelled: Tensor,
    device: torch.device,
) -> dict[int, dict[str, float]]:
    """k -> weighted-kNN top-1/top-5 of the pretrained features, for every k of args.knn_k (as
    `resolve_knn_k` resolved it) and k=20 (when there are 20 labelled train samples)."""
    train, test = data.train, data.test
    train_features = features["train"].to(device)[labelled.to(device)]
    return {
        k: knn_accuracy(
            train_features,
            train.labels[labelled].to(device),
            features["test"].to(device),
            test.labels.to(device),
            train.num_classes,
            k=k,
            temperature=args.knn_temperature,
        )
        for k in sorted(set(args.knn_k) | ({20} if len(labelled) >= 20 else set()))
    }


# --------------------------------------------------------------------------------------------
# What the probe leaves behind


def nn_grid_queries(num_test: int, seed: int, count: int = _NN_QUERIES) -> Tensor:
    """Sorted int64 indices of `count` test samples drawn with a CPU generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_test, generator=generator)[: min(count, num_test)].sort().values


def _write_pictures(
    args: argparse.Namespace,
    mode: str,
    trained: _Trained,
    data: ProbeData,
    features: dict[str, Tensor],
    output_dir: Path,
    device: torch.device,
) -> None:
    """metrics.csv and probe_curves.png of the training, t-SNE and the neighbour grid of the
    pretrained features (matplotlib is imported here, only when a picture is drawn)."""
    from contrastkit.pipelines.plots import plot_nn_grid, plot_probe_curves, plot_tsne

    history, train, test = trained.result.history, data.train, data.test
    write_history_csv(history, output_dir / METRICS_FILE)
    title = "Fine-tuning" if mode == "finetune" else "Linear probe"
    curves = output_dir / PROBE_CURVES_FILE
    plot_probe_curves(history, curves, title=title, num_classes=train.num_classes)
    test_features = features["test"].to(device)
    if not args.no_tsne and len(test) >= 2:
        embedding = tsne_embedding(
            test_features, test.labels, max_points=args.tsne_points, seed=args.seed
        )
        plot_tsne(embedding, test.classes, output_dir / TSNE_FILE)
    if not args.no_nn_grid and test.kind == "image":
        queries = nn_grid_queries(len(test), args.seed)
        neighbours = nearest_neighbours(
            test_features[queries.to(device)],
            features["train"].to(device),
            k=min(_NN_NEIGHBOURS, len(train)),
        )
        plot_nn_grid(
            test.inputs[queries], test.labels[queries], train.inputs, train.labels,
            neighbours.cpu(), output_dir / NN_GRID_FILE, class_names=test.classes,
        )  # fmt: skip


def _save_model(mode: str, backbone: nn.Module, head: nn.Module, output_dir: Path) -> None:
    """finetuned.pt (backbone + head) after fine-tuning, else classifier.pt (the head)."""
    if mode == "finetune":
        state = {"backbone": backbone.cpu().state_dict(), "head": head.state_dict()}
        save_torch_atomic(state, output_dir / FINETUNED_FILE)
    else:
        save_torch_atomic({"head": head.state_dict()}, output_dir / CLASSIFIER_FILE)


def _results_row(
    args: argparse.Namespace,
    mode: str,
    checkpoint: PretrainedCheckpoint,
    data: ProbeData,
    trained: _Trained,
    knn: dict[int, dict[str, float]],
    wall_s: float,
) -> dict[str, Any]:
    main_k = max(args.knn_k)
    return {
        "method": RANDOM_INIT if args.random_init else checkpoint.method,
        "backbone": checkpoint.backbone_name,
        "epochs": 0 if args.random_init else checkpoint.epochs,
        "knn_top1": knn[main_k]["top1"],
        "linear_top1": trained.result.top1,
        "wall_s": round(wall_s, 2),
        "top5": trained.result.top5,
        "knn_top1_k20": knn[20]["top1"] if 20 in knn else None,
        "knn_top5": knn[main_k]["top5"],
        "knn_k": main_k,
        "label_fraction": args.label_fraction,
        "dataset": data.name,
        "pretrain_dataset": checkpoint.dataset,
        "mode": mode,
        "solver": args.solver if mode == "linear" else "sgd",
        "probe_epochs": trained.epochs,
        "lr": trained.lr,
        "seed": args.seed,
        "step": 0 if args.random_init else checkpoint.step,
        "checkpoint": str(checkpoint.path),
    }


# --------------------------------------------------------------------------------------------
# The command


def run_probe(
    args: argparse.Namespace, accelerator: Accelerator | None = None
) -> ProbeOutcome | None:
    """Run one probe as `main` does (args from `build_parser`); None on the other processes."""
    start = time.perf_counter()
    check_args(args)
    accelerator = accelerator or make_accelerator()
    mode = probe_mode(args)
    checkpoint = load_checkpoint(args.checkpoint)
    source = data_source(args, checkpoint)
    output_dir, cache_dir = probe_folders(
        args, checkpoint, source[0], is_main=accelerator.is_main_process
    )
    backbone, fingerprint = probe_backbone(args, checkpoint, accelerator.device)
    data = prepare_data(args, checkpoint, source, backbone)
    labelled = label_fraction_indices(data.train.labels, args.label_fraction, args.seed)
    args = resolve_knn_k(args, len(labelled), is_main=accelerator.is_main_process)
    # Identity-view features, extracted once by the main process, cached in cache_dir.
    features: dict[str, Tensor] = {}
    if accelerator.is_main_process:
        with accelerator.autocast():
            features = checkpoint_features(
                backbone, checkpoint.path,
                {"train": (data.train, args.train_subset), "test": (data.test, args.test_subset)},
                data.transform, dataset=data.name, data_dir=data.data_dir,
                view_dataset=data.view_dataset, seed=args.seed,
                mixed_precision=str(accelerator.mixed_precision), progress=not args.no_progress,
                cache_dir=cache_dir, weights_file=checkpoint.weights, weights_sha256=fingerprint,
            )  # fmt: skip
    accelerator.wait_for_everyone()

    if mode == "linear":
        trained = linear_mode(args, data, features, labelled, accelerator)
    else:
        trained = view_mode(args, mode, data, features, labelled, backbone, accelerator)
    if trained is None:  # not the main process: everything below runs once
        return None

    # kNN, t-SNE and the grid describe the pretrained representation (cached features).
    knn = knn_mode(args, data, features, labelled, accelerator.device)
    _write_pictures(args, mode, trained, data, features, output_dir, accelerator.device)
    head = trained.result.head.cpu()
    _save_model(mode, backbone, head, output_dir)
    summary = probe_summary_markdown(checkpoint, backbone.cpu(), head, data.test)
    write_text_atomic(output_dir / MODEL_SUMMARY_FILE, summary)

    row = _results_row(args, mode, checkpoint, data, trained, knn, time.perf_counter() - start)
    append_results(output_dir / RESULTS_FILE, row)
    write_probe_report(
        output_dir, row, knn, summary,
        num_train=len(data.train), num_labelled=len(labelled), num_test=len(data.test),
    )  # fmt: skip
    return ProbeOutcome(row, output_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (`contrastkit-probe`, `packages/pipelines/probe.py`); returns the
    exit status: 0 done, 2 bad input or an unusable path (one line says what to fix)."""
    args = build_parser().parse_args(argv)
    try:
        outcome = run_probe(args)
        leave_process_group(wait=True)  # the main process may still be writing: wait for it
    except (ValueError, OSError) as error:  # an OSError from the system names its path
        reason = describe_os_error(error) if isinstance(error, OSError) and error.errno else error
        print(f"contrastkit-probe: error: {reason}", file=sys.stderr)
        return 2
    finally:
        leave_process_group(wait=False)
    if outcome is not None:
        row = outcome.row
        print(
            f"contrastkit-probe: {row['mode']} probe of {row['method']} {row['backbone']} on "
            f"{row['dataset']}: top-1 {row['linear_top1']:.2f} %, kNN (k={row['knn_k']}) top-1 "
            f"{row['knn_top1']:.2f} %, {row['wall_s']:.1f} s; report {outcome.output_dir / REPORT_FILE}",
            file=sys.stderr,
        )
    return 0
