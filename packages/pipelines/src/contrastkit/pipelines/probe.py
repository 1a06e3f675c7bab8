"""Evaluate a pretrained backbone: frozen linear probe, fine-tuning, weighted kNN, t-SNE and nearest neighbours.

`accelerate launch packages/pipelines/probe.py --checkpoint RUN --data-dir DIR --output-dir DIR` reads a
pretrain checkpoint and writes results.csv (one row appended per run), metrics.csv, the PNGs and report.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from accelerate import Accelerator
from accelerate.utils import broadcast
from torch import Tensor, nn
from tqdm.auto import tqdm

from contrastkit.augment import make_views
from contrastkit.backbones import LinearClassifier, ProjectionHead, create_backbone, model_summary
from contrastkit.pipelines.checkpoint import resolve_checkpoint
from contrastkit.pipelines.data import (
    AUGMENT_DATASET,
    DATASET_NAMES,
    DeviceBatches,
    InMemoryDataset,
    balanced_subset,
    load_dataset,
)
from contrastkit.pipelines.evaluation.features import extract_features
from contrastkit.pipelines.evaluation.knn import knn_accuracy, nearest_neighbours, topk_accuracy
from contrastkit.pipelines.evaluation.linear_probe import (
    SOLVERS,
    label_fraction_indices,
    train_linear_probe,
)
from contrastkit.pipelines.evaluation.report import (
    ReportSection,
    append_results,
    model_summary_markdown,
    write_history_csv,
    write_report,
)
from contrastkit.pipelines.plots import plot_nn_grid, plot_probe_curves, plot_tsne
from contrastkit.pipelines.training.accelerator import make_accelerator

# Bump when the cache file layout changes, so old caches are recomputed rather than misread.
_CACHE_FORMAT = 1
_FEATURE_BATCH = 512
_NN_QUERIES = 10
_NN_NEIGHBOURS = 8
_DEFAULT_EPOCHS = {"linear": 100, "augment": 30, "finetune": 30}
_DEFAULT_LR = {"augment": 0.1, "finetune": 0.05}
_DEFAULT_WEIGHT_DECAY = {"linear": 0.0, "augment": 0.0, "finetune": 5e-4}
_CHECKPOINT_EXPECTED = (
    "a pretrain run directory holding checkpoint-<step>/ folders, or one checkpoint folder "
    "holding backbone.pt, config.yaml and meta.json"
)


# --------------------------------------------------------------------------------------------
# The checkpoint


@dataclass
class PretrainedCheckpoint:
    """One pretrain checkpoint folder: its resolved config (a plain dict) and meta.json.

    Only these config keys are read: model.backbone, model.backbone_kwargs, model.projection_*,
    method.name, data.dataset, data.data_dir, data.image_size, data.tabular_options, train.epochs.
    """

    path: Path
    config: dict[str, Any]
    meta: dict[str, Any]

    def get(self, section: str, key: str, default: Any = None) -> Any:
        """config[section][key], or `default` when either is missing."""
        values = self.config.get(section) or {}
        return values.get(key, default) if isinstance(values, dict) else default

    @property
    def method(self) -> str:
        """The pretrain method; "supervised" for a joint run with joint.ssl_weight 0 (no SSL term)."""
        if self.meta.get("task") == "joint" and self.meta.get("ssl_weight") == 0:
            return "supervised"
        return str(self.get("method", "name", self.meta.get("method", "")))

    @property
    def backbone_name(self) -> str:
        return str(self.get("model", "backbone"))

    @property
    def backbone_kwargs(self) -> dict[str, Any]:
        return dict(self.get("model", "backbone_kwargs") or {})

    @property
    def dataset(self) -> str:
        return str(self.get("data", "dataset"))

    @property
    def data_dir(self) -> str | None:
        return self.get("data", "data_dir")

    @property
    def image_size(self) -> int | None:
        return self.get("data", "image_size")

    @property
    def tabular_options(self) -> dict[str, Any]:
        return dict(self.get("data", "tabular_options") or {})

    @property
    def epochs(self) -> float | int | None:
        """Pretraining epochs done at this checkpoint (meta.json step / steps_per_epoch, else its
        epoch), or the configured train.epochs when meta.json says neither."""
        step, per_epoch = self.meta.get("step"), self.meta.get("steps_per_epoch")
        if isinstance(step, int) and isinstance(per_epoch, int) and per_epoch > 0:
            done = step / per_epoch
            return int(done) if done.is_integer() else round(done, 3)
        epoch = self.meta.get("epoch")
        return epoch if epoch is not None else self.get("train", "epochs")

    @property
    def step(self) -> int | None:
        return self.meta.get("step")


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder `path` names: itself, or the latest checkpoint of a run directory.

    Raises FileNotFoundError saying what was expected when `path` is neither.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"--checkpoint {str(path)!r} does not exist; expected {_CHECKPOINT_EXPECTED}"
        )
    if not path.is_dir():
        raise FileNotFoundError(
            f"--checkpoint {str(path)!r} is a file; expected {_CHECKPOINT_EXPECTED}"
        )
    try:
        folder = Path(resolve_checkpoint(path))
    except (FileNotFoundError, ValueError) as error:
        raise FileNotFoundError(
            f"--checkpoint: {error}; a checkpoint folder holds backbone.pt, config.yaml and meta.json"
        ) from None
    missing = [name for name in ("backbone.pt", "config.yaml") if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"checkpoint folder {str(folder)!r} lacks {missing}; expected {_CHECKPOINT_EXPECTED}"
        )
    return folder


def load_checkpoint(path: str | Path) -> PretrainedCheckpoint:
    """Resolve `path` (run directory or checkpoint folder) and read its config.yaml and meta.json."""
    folder = find_checkpoint(path)
    try:
        config = yaml.safe_load((folder / "config.yaml").read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{folder / 'config.yaml'} is not valid YAML: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(
            f"{folder / 'config.yaml'} must hold a mapping of config sections, got {config!r}"
        )
    meta: dict[str, Any] = {}
    if (folder / "meta.json").is_file():
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{folder / 'meta.json'} is not valid JSON: {error}") from None
    checkpoint = PretrainedCheckpoint(folder, config, meta if isinstance(meta, dict) else {})
    for section, key, value in (
        ("model", "backbone", checkpoint.get("model", "backbone")),
        ("data", "dataset", checkpoint.get("data", "dataset")),
    ):
        if not value:
            raise ValueError(
                f"{folder / 'config.yaml'} has no {section}.{key}; is it a pretrain config?"
            )
    return checkpoint


def build_backbone(checkpoint: PretrainedCheckpoint) -> nn.Module:
    """create_backbone(model.backbone, **model.backbone_kwargs) with backbone.pt loaded, on the CPU."""
    backbone = create_backbone(checkpoint.backbone_name, **checkpoint.backbone_kwargs)
    file = checkpoint.path / "backbone.pt"
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt file
        raise ValueError(f"{file} could not be read as a state dict: {error}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{file} must hold a state dict, got {type(state).__name__}")
    # A state dict saved from a compiled or DDP-wrapped module carries a prefix on every key.
    for prefix in ("_orig_mod.", "module."):
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    result = backbone.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{file} does not match model.backbone={checkpoint.backbone_name!r} with "
            f"backbone_kwargs={checkpoint.backbone_kwargs}: missing keys {result.missing_keys[:5]}, "
            f"unexpected keys {result.unexpected_keys[:5]}"
        )
    return backbone


# --------------------------------------------------------------------------------------------
# Data and views


def _view_size(data: InMemoryDataset) -> int:
    return int(data.inputs.shape[-1]) if data.kind == "image" else int(data.inputs.shape[1])


def _memory_format(view: Tensor, channels_last: bool) -> Tensor:
    return view.contiguous(memory_format=torch.channels_last) if channels_last else view


def identity_transform(view_dataset: str, size: int, channels_last: bool = False) -> Any:
    """The normalize-only view of a batch: uint8 images -> normalized floats, tabular rows as they are."""
    views = make_views("identity", size, view_dataset)
    return lambda batch: _memory_format(views(batch)[0], channels_last)


def check_input_compatibility(
    backbone: nn.Module,
    checkpoint: PretrainedCheckpoint,
    data: InMemoryDataset,
    name: str,
    transform: Any,
) -> None:
    """Raise ValueError when `data`'s inputs cannot go through the checkpoint's backbone."""
    pretrained_kind = "tabular" if checkpoint.dataset == "tabular" else "image"
    if data.kind != pretrained_kind:
        raise ValueError(
            f"the checkpoint's backbone {checkpoint.backbone_name!r} was pretrained on "
            f"{checkpoint.dataset!r} ({pretrained_kind} inputs) but --data {name!r} gives {data.kind} "
            f"inputs of shape {tuple(data.inputs.shape[1:])}"
        )
    expected = checkpoint.backbone_kwargs.get(
        "in_features" if data.kind == "tabular" else "in_channels"
    )
    given = int(data.inputs.shape[1])
    if expected is not None and int(expected) != given:
        what = "feature columns" if data.kind == "tabular" else "channels"
        raise ValueError(
            f"input dimensions do not match: the backbone takes {expected} {what} "
            f"(model.backbone_kwargs of the checkpoint) but --data {name!r} has {given} {what}"
        )
    try:
        extract_features(backbone, data.inputs[:2], transform=transform)
    except RuntimeError as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"input dimensions do not match: backbone {checkpoint.backbone_name!r} cannot take --data "
            f"{name!r} inputs of shape {tuple(data.inputs.shape[1:])} ({first_line})"
        ) from None


# --------------------------------------------------------------------------------------------
# The feature cache


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def feature_cache_path(
    checkpoint_dir: Path, dataset: str, split: str, subset: int | None, seed: int
) -> Path:
    """`<checkpoint>/features-<dataset>-<split>[-n<subset>-s<seed>].pt`."""
    suffix = f"-n{subset}-s{seed}" if subset is not None else ""
    return Path(checkpoint_dir) / f"features-{dataset}-{split}{suffix}.pt"


def cached_features(
    backbone: nn.Module,
    inputs: Tensor,
    transform: Any,
    cache_path: Path,
    key: dict[str, Any],
    *,
    progress: bool = False,
    write: bool = True,
) -> tuple[Tensor, bool]:
    """(N, D) float32 CPU features of `inputs`: read from `cache_path` when its key matches, else extracted.

    The key (backbone.pt's sha256, dataset, split, data folder, image size, sample count) is stored
    with the features; any difference, e.g. a checkpoint rewritten in place, means a fresh extraction
    that replaces the file. A cache that cannot be written (read-only folder) is skipped.

    Returns:
        (features, True when they came from the cache).
    """
    if cache_path.is_file():
        try:
            stored = torch.load(cache_path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated or foreign file is simply recomputed
            stored = None
        if isinstance(stored, dict) and stored.get("key") == key:
            return stored["features"], True
    features = extract_features(
        backbone, inputs, transform=transform, batch_size=_FEATURE_BATCH, progress=progress
    )
    features = features.cpu()
    if write:
        tmp = cache_path.with_name(f".{cache_path.name}.tmp")
        try:
            torch.save({"key": key, "features": features}, tmp)
            tmp.replace(cache_path)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            print(f"contrastkit-probe: not caching features ({error})", file=sys.stderr)
    return features, False


# --------------------------------------------------------------------------------------------
# Training through the backbone: linear head on augmented features, or fine-tuning


class StandardizedLinear(nn.Module):
    """Standardised features, then a linear layer: (N, D) float features -> (N, C) float32 logits.

    Fixed (default): (x - mean) / std with the train statistics of the pretrained features, the
    standardisation of `train_linear_probe`, so one learning rate suits every backbone. With
    `track_batches` (fine-tuning, where the features move as the backbone trains) the
    standardisation is a BatchNorm1d without affine parameters whose running statistics start at
    (mean, std^2): batch statistics in training, running ones in eval, as MAE's probe head.
    """

    def __init__(
        self, mean: Tensor, std: Tensor, num_classes: int, seed: int, *, track_batches: bool = False
    ) -> None:
        super().__init__()
        dim = mean.shape[0]
        self.norm: nn.BatchNorm1d | None = None
        if track_batches:
            self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
            with torch.no_grad():
                self.norm.running_mean.copy_(mean.float())
                self.norm.running_var.copy_(std.float() ** 2)
        else:
            self.register_buffer("mean", mean.detach().float().clone())
            self.register_buffer("std", std.detach().float().clone())
        self.classifier = LinearClassifier(dim, num_classes)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # MoCo's lincls init, seeded without touching the global RNG
            self.classifier.linear.weight.copy_(
                torch.randn(num_classes, dim, generator=generator) * 0.01
            )
            self.classifier.linear.bias.zero_()

    def forward(self, features: Tensor) -> Tensor:
        features = features.float()
        if self.norm is not None:
            return self.classifier(self.norm(features))
        return self.classifier((features - self.mean) / self.std)


class _BackboneAndHead(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def standardization(features: Tensor) -> tuple[Tensor, Tensor]:
    """(D,) mean and std of train features; dimensions with std < 1e-6 are only centred."""
    mean = features.float().mean(dim=0)
    std = features.float().std(dim=0, unbiased=False)
    return mean, torch.where(std < 1e-6, torch.ones_like(std), std)


def _evaluate_logits(logits: Tensor, labels: Tensor) -> dict[str, float]:
    labels = labels.to(logits.device)
    accuracy = topk_accuracy(logits, labels)
    return {
        "loss": F.cross_entropy(logits.float(), labels).item(),
        "top1": accuracy["top1"],
        "top5": accuracy["top5"],
    }


@dataclass
class ViewTrainingResult:
    """Outcome of `train_on_views`: the head (and backbone, trained in place when fine-tuning),
    per-epoch history (epoch, train_loss, val_loss, val_top1, val_top5, lr) and the final test top-1/top-5."""

    head: StandardizedLinear
    history: list[dict[str, float]]
    top1: float
    top5: float


def train_on_views(
    backbone: nn.Module,
    head: StandardizedLinear,
    train: InMemoryDataset,
    test: InMemoryDataset,
    *,
    accelerator: Accelerator,
    finetune: bool,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    seed: int,
    view_dataset: str,
    backbone_lr_scale: float = 0.1,
    test_features: Tensor | None = None,
    channels_last: bool = False,
    progress: bool = True,
) -> ViewTrainingResult:
    """Train `head` on backbone features of augmented views, and the backbone too when `finetune`.

    Each step draws a fresh augmentation of the batch on the device (contrastkit.augment's
    `linear_probe` recipe for images: crop with 4 px padding + flip; identity for tabular rows).
    Frozen (finetune=False): the backbone stays in eval mode under no_grad, so neither its weights
    nor its BatchNorm statistics move. Fine-tuning: the backbone trains at lr * backbone_lr_scale,
    the head at lr. SGD (momentum 0.9), per-step cosine LR to 0, batches from DeviceBatches sharded
    over the accelerate processes (per-process batch `batch_size`). After each epoch the main process
    evaluates on `test` with the identity view (or on `test_features` when frozen).

    Args:
        backbone, head: modules on the CPU or the accelerator's device.
        train, test: in-memory datasets (images uint8 (N, C, H, W) or tabular (N, F)).
        test_features: (Nt, D) features of `test`; used instead of a forward pass when frozen.
        channels_last: feed images in channels_last memory format (as the pretrain run did).
    """
    device = accelerator.device
    world, rank = accelerator.num_processes, accelerator.process_index
    batch_size = min(batch_size, len(train) // world)
    if batch_size < 1:
        raise ValueError(f"the train set has {len(train)} samples, too few for {world} processes")
    batches = DeviceBatches(
        train, batch_size, seed=seed, rank=rank, world_size=world, device=device
    )
    size = _view_size(train)
    recipe = "linear_probe" if train.kind == "image" else "identity"
    train_views = make_views(recipe, size, view_dataset, seed=seed * 1000 + rank)
    eval_view = identity_transform(view_dataset, size, channels_last)

    backbone.to(device, memory_format=torch.channels_last) if channels_last else backbone.to(device)
    head.to(device)
    if finetune:
        model: nn.Module = _BackboneAndHead(backbone, head)
        groups = [
            {"params": list(backbone.parameters()), "lr": lr * backbone_lr_scale},
            {"params": list(head.parameters()), "lr": lr},
        ]
    else:
        backbone.eval()
        backbone.requires_grad_(False)
        model = head
        groups = [{"params": list(head.parameters()), "lr": lr}]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    total_steps = epochs * batches.batches_per_epoch
    # Not handed to accelerator.prepare: it would step the schedule once per process per step.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps)),
    )
    model, optimizer = accelerator.prepare(model, optimizer)

    history: list[dict[str, float]] = []
    bar = tqdm(
        range(epochs),
        desc="fine-tune" if finetune else "linear probe (augmented)",
        disable=not progress,
    )
    for epoch in bar:
        model.train() if finetune else head.train()
        total = torch.zeros((), device=device)
        for inputs, labels in batches.epoch(epoch):
            view = _memory_format(train_views(inputs)[0], channels_last)
            with accelerator.autocast():
                if finetune:
                    logits = model(view)
                else:
                    with torch.no_grad():
                        features = backbone(view)
                    logits = model(features.float())
                loss = F.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            total += loss.detach()
        train_loss = accelerator.reduce(total, reduction="mean").item() / batches.batches_per_epoch
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(model)
            head_module = unwrapped.head if finetune else unwrapped
            with torch.no_grad():
                if finetune or test_features is None:
                    with accelerator.autocast():
                        feats = extract_features(
                            backbone, test.inputs, transform=eval_view, batch_size=_FEATURE_BATCH
                        )
                else:
                    feats = test_features
                head_module.eval()
                val = _evaluate_logits(head_module(feats.to(device)), test.labels)
            history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    "val_loss": val["loss"],
                    "val_top1": val["top1"],
                    "val_top5": val["top5"],
                    "lr": optimizer.param_groups[-1]["lr"],
                }
            )
            bar.set_postfix(loss=f"{train_loss:.3f}", val_top1=f"{val['top1']:.1f}")
    accelerator.wait_for_everyone()
    head = accelerator.unwrap_model(model).head if finetune else accelerator.unwrap_model(model)
    backbone.requires_grad_(True)
    final = history[-1] if history else {"val_top1": math.nan, "val_top5": math.nan}
    return ViewTrainingResult(
        head=head, history=history, top1=final["val_top1"], top5=final["val_top5"]
    )


# --------------------------------------------------------------------------------------------
# Pictures and summaries


def nn_grid_queries(num_test: int, seed: int, count: int = _NN_QUERIES) -> Tensor:
    """Sorted int64 indices of `count` test samples drawn with a CPU generator seeded with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_test, generator=generator)[: min(count, num_test)].sort().values


def summary_markdown(
    checkpoint: PretrainedCheckpoint, backbone: nn.Module, head: nn.Module, data: InMemoryDataset
) -> str:
    """Model summary tables (layer, output shape, parameters): backbone + classifier, then the
    pretraining projection head the config describes (its shape, not its trained weights)."""
    input_size = (1, *data.inputs.shape[1:])
    was_training = backbone.training
    probe_model = _BackboneAndHead(backbone, head).cpu()
    summary = model_summary(probe_model, input_size, dtype=torch.float32, device="cpu")
    summary.model_name = f"{checkpoint.backbone_name} + linear classifier"
    parts = [model_summary_markdown(summary)]
    model = checkpoint.config.get("model") or {}
    if "projection_dim" in model and hasattr(backbone, "num_features"):
        try:
            projection = ProjectionHead(
                int(backbone.num_features),
                int(model.get("projection_hidden_dim", 2048)),
                int(model["projection_dim"]),
                num_layers=int(model.get("projection_layers", 2)),
                batch_norm=bool(model.get("projection_batch_norm", True)),
            )
        except (ValueError, TypeError):
            projection = None
        if projection is not None:
            head_summary = model_summary(projection, (1, int(backbone.num_features)))
            head_summary.model_name = f"projection head used in {checkpoint.method} pretraining"
            parts.append(model_summary_markdown(head_summary))
    backbone.train(was_training)
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# The command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contrastkit-probe",
        description=(
            "Evaluate a pretrained backbone: linear probe (frozen) or fine-tuning, weighted kNN, "
            "t-SNE and a nearest-neighbour grid. Appends a row to OUTPUT_DIR/results.csv and "
            "writes metrics.csv, PNGs and report.md there."
        ),
    )
    parser.add_argument(
        "--checkpoint", required=True, help=f"{_CHECKPOINT_EXPECTED} (the run's latest is used)"
    )
    parser.add_argument(
        "--data-dir", help="dataset location (default: the pretrain config's data.data_dir)"
    )
    parser.add_argument(
        "--output-dir", help="where results and pictures go (default: <run dir>/probe-<dataset>)"
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
        help=f"training epochs (default: {_DEFAULT_EPOCHS['linear']} linear, "
        f"{_DEFAULT_EPOCHS['finetune']} with --augment or --finetune); L-BFGS iterations for --solver lbfgs",
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
        default=[20, 200],
        help="kNN neighbour counts (default: 20 200)",
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
    return parser


def _check_args(args: argparse.Namespace) -> None:
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
    if any(k < 1 for k in args.knn_k):
        raise ValueError(f"--knn-k values must be >= 1, got {args.knn_k}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if (args.augment or args.finetune) and args.solver != "sgd":
        raise ValueError(
            f"--solver {args.solver} works on cached features only; --augment and --finetune train with sgd"
        )


def _run_dir(checkpoint_dir: Path) -> Path:
    return (
        checkpoint_dir.parent if checkpoint_dir.name.startswith("checkpoint-") else checkpoint_dir
    )


def _load_split(
    name: str,
    data_dir: str,
    split: str,
    checkpoint: PretrainedCheckpoint,
    image_size: int | None,
    subset: int | None,
    seed: int,
) -> InMemoryDataset:
    options = checkpoint.tabular_options if name == "tabular" else {}
    data = load_dataset(
        name, data_dir, split, image_size=image_size if name != "tabular" else None, **options
    )
    if subset is not None and subset < len(data):
        data = data.subset(balanced_subset(data.labels, subset, seed))
    return data


@dataclass
class ProbeOutcome:
    """What `run_probe` did on the main process: the results row appended, and where."""

    row: dict[str, Any]
    output_dir: Path


def run_probe(
    args: argparse.Namespace, accelerator: Accelerator | None = None
) -> ProbeOutcome | None:
    """Run one probe as `main` does (args from `build_parser`); None on the other processes."""
    start = time.perf_counter()
    _check_args(args)
    accelerator = accelerator or make_accelerator()
    main_process = accelerator.is_main_process
    progress = main_process and not args.no_progress
    mode = "finetune" if args.finetune else ("augment" if args.augment else "linear")

    checkpoint = load_checkpoint(args.checkpoint)
    name = args.data or checkpoint.dataset
    if name not in DATASET_NAMES:
        raise ValueError(
            f"the checkpoint's data.dataset is {name!r}; pass --data, one of {DATASET_NAMES}"
        )
    pretrained_kind = "tabular" if checkpoint.dataset == "tabular" else "image"
    if ("tabular" if name == "tabular" else "image") != pretrained_kind:
        raise ValueError(
            f"the checkpoint's backbone {checkpoint.backbone_name!r} was pretrained on "
            f"{checkpoint.dataset!r} ({pretrained_kind} inputs); --data {name!r} cannot go through it"
        )
    data_dir = args.data_dir
    if data_dir is None:
        if name != checkpoint.dataset or not checkpoint.data_dir:
            raise ValueError(
                f"--data-dir is required for --data {name!r} (the pretrain data was {checkpoint.dataset!r})"
            )
        data_dir = checkpoint.data_dir
    image_size = args.image_size or checkpoint.image_size
    output_dir = (
        Path(args.output_dir) if args.output_dir else _run_dir(checkpoint.path) / f"probe-{name}"
    )

    backbone = build_backbone(checkpoint).to(accelerator.device)
    train = _load_split(
        name, data_dir, "train", checkpoint, image_size, args.train_subset, args.seed
    )
    test = _load_split(name, data_dir, "test", checkpoint, image_size, args.test_subset, args.seed)
    # Inputs are normalized as in pretraining: the statistics the backbone's first layer saw.
    view_dataset = AUGMENT_DATASET[checkpoint.dataset] if train.kind == "image" else "tabular"
    channels_last = train.kind == "image" and bool(checkpoint.get("model", "channels_last", False))
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    transform = identity_transform(view_dataset, _view_size(train), channels_last)
    check_input_compatibility(backbone, checkpoint, train, name, transform)

    # Features of the identity view, extracted once by the main process and cached in the checkpoint.
    fingerprint = file_sha256(checkpoint.path / "backbone.pt")
    features: dict[str, Tensor] = {}
    if main_process:
        for split, data, subset in (
            ("train", train, args.train_subset),
            ("test", test, args.test_subset),
        ):
            key = {
                "format": _CACHE_FORMAT,
                "backbone_sha256": fingerprint,
                "dataset": name,
                "split": split,
                "data_dir": str(Path(data_dir).expanduser().resolve()),
                "image_size": _view_size(data),
                "view_dataset": view_dataset,
                "num_samples": len(data),
                "mixed_precision": str(accelerator.mixed_precision),
            }
            path = feature_cache_path(checkpoint.path, name, split, subset, args.seed)
            with accelerator.autocast():
                features[split], _ = cached_features(
                    backbone, data.inputs, transform, path, key, progress=progress
                )
    accelerator.wait_for_everyone()

    labelled = label_fraction_indices(train.labels, args.label_fraction, args.seed)
    num_features = int(getattr(backbone, "num_features", 0)) or None
    mean = std = None
    if mode != "linear":
        dim = features["train"].shape[1] if main_process else num_features
        mean = torch.zeros(dim, device=accelerator.device)
        std = torch.ones(dim, device=accelerator.device)
        if main_process:
            mean, std = (
                t.to(accelerator.device) for t in standardization(features["train"][labelled])
            )
        mean, std = broadcast(mean), broadcast(std)

    epochs = args.epochs or _DEFAULT_EPOCHS[mode]
    weight_decay = (
        args.weight_decay if args.weight_decay is not None else _DEFAULT_WEIGHT_DECAY[mode]
    )
    head: nn.Module
    if mode == "linear":
        result = None
        if main_process:
            result = train_linear_probe(
                features["train"][labelled].to(accelerator.device),
                train.labels[labelled].to(accelerator.device),
                features["test"].to(accelerator.device),
                test.labels.to(accelerator.device),
                train.num_classes,
                epochs=epochs,
                lr=args.lr,
                batch_size=args.batch_size,
                weight_decay=weight_decay,
                solver=args.solver,
                seed=args.seed,
                progress=progress,
            )
        accelerator.wait_for_everyone()
        if not main_process:
            return None
        assert result is not None
        history, top1, top5 = result.history, result.top1, result.top5
        head = StandardizedLinear(
            result.feature_mean, result.feature_std, train.num_classes, args.seed
        )
        head.classifier.linear.load_state_dict(result.classifier.state_dict())
        lr = args.lr if args.lr is not None else {"sgd": 0.1, "lbfgs": 1.0}.get(args.solver, 0.0)
    else:
        lr = args.lr or _DEFAULT_LR[mode]
        assert mean is not None and std is not None
        trained = train_on_views(
            backbone,
            StandardizedLinear(
                mean, std, train.num_classes, args.seed, track_batches=args.finetune
            ),
            train.subset(labelled),
            test,
            accelerator=accelerator,
            finetune=args.finetune,
            epochs=epochs,
            lr=lr,
            batch_size=args.batch_size,
            weight_decay=weight_decay,
            seed=args.seed,
            view_dataset=view_dataset,
            backbone_lr_scale=args.backbone_lr_scale,
            test_features=features.get("test"),
            channels_last=channels_last,
            progress=progress,
        )
        if not main_process:
            return None
        history, top1, top5, head = trained.history, trained.top1, trained.top5, trained.head

    # Everything below describes the pretrained representation (cached features) and runs once.
    output_dir.mkdir(parents=True, exist_ok=True)
    device = accelerator.device
    train_features, test_features = features["train"].to(device), features["test"].to(device)
    knn: dict[int, dict[str, float]] = {}
    for k in sorted(set(args.knn_k) | {20}):
        knn[k] = knn_accuracy(
            train_features[labelled.to(device)],
            train.labels[labelled].to(device),
            test_features,
            test.labels.to(device),
            train.num_classes,
            k=k,
            temperature=args.knn_temperature,
        )
    main_k = max(args.knn_k)

    write_history_csv(history, output_dir / "metrics.csv")
    title = "Fine-tuning" if mode == "finetune" else "Linear probe"
    plot_probe_curves(history, output_dir / "probe_curves.png", title=title)
    if not args.no_tsne and len(test) >= 2:
        plot_tsne(
            test_features,
            test.labels,
            test.classes,
            output_dir / "tsne.png",
            max_points=args.tsne_points,
            seed=args.seed,
        )
    if not args.no_nn_grid and test.kind == "image":
        queries = nn_grid_queries(len(test), args.seed)
        neighbours = nearest_neighbours(
            test_features[queries.to(device)], train_features, k=min(_NN_NEIGHBOURS, len(train))
        )
        plot_nn_grid(
            test.inputs[queries],
            test.labels[queries],
            train.inputs,
            train.labels,
            neighbours.cpu(),
            output_dir / "nn_grid.png",
            class_names=test.classes,
        )

    head = head.cpu()
    if mode == "finetune":
        torch.save(
            {
                "backbone": backbone.cpu().state_dict(),
                "head": head.state_dict(),
            },
            output_dir / "finetuned.pt",
        )
    else:
        torch.save({"head": head.state_dict()}, output_dir / "classifier.pt")
    summary = summary_markdown(checkpoint, backbone.cpu(), head, test)
    (output_dir / "model_summary.md").write_text(summary)

    row: dict[str, Any] = {
        "method": checkpoint.method,
        "backbone": checkpoint.backbone_name,
        "epochs": checkpoint.epochs,
        "knn_top1": knn[main_k]["top1"],
        "linear_top1": top1,
        "wall_s": round(time.perf_counter() - start, 2),
        "top5": top5,
        "knn_top1_k20": knn[20]["top1"],
        "knn_top5": knn[main_k]["top5"],
        "knn_k": main_k,
        "label_fraction": args.label_fraction,
        "dataset": name,
        "pretrain_dataset": checkpoint.dataset,
        "mode": mode,
        "solver": args.solver if mode == "linear" else "sgd",
        "probe_epochs": epochs,
        "lr": lr,
        "seed": args.seed,
        "step": checkpoint.step,
        "checkpoint": str(checkpoint.path),
    }
    append_results(output_dir / "results.csv", row)
    _write_probe_report(
        output_dir, checkpoint, row, knn, summary, len(train), len(labelled), len(test)
    )
    return ProbeOutcome(row, output_dir)


def _write_probe_report(
    output_dir: Path,
    checkpoint: PretrainedCheckpoint,
    row: dict[str, Any],
    knn: dict[int, dict[str, float]],
    summary: str,
    num_train: int,
    num_labelled: int,
    num_test: int,
) -> Path:
    what = {
        "linear": "frozen backbone, cached features",
        "augment": "frozen backbone, augmented views",
        "finetune": "whole network fine-tuned",
    }[row["mode"]]
    lines = [
        "| | |",
        "| --- | --- |",
        f"| checkpoint | `{row['checkpoint']}` (step {row['step']}, epoch {row['epochs']}) |",
        f"| pretraining | {row['method']}, {row['backbone']} on {row['pretrain_dataset']} |",
        f"| probe | {row['mode']} ({what}), solver {row['solver']}, {row['probe_epochs']} epochs, lr {row['lr']} |",
        f"| data | {row['dataset']}: {num_labelled} labelled of {num_train} train samples "
        f"(label fraction {row['label_fraction']}), {num_test} test samples |",
        f"| classifier | top-1 {row['linear_top1']:.2f} %, top-5 {row['top5']:.2f} % |",
    ]
    for k, accuracy in sorted(knn.items()):
        lines.append(
            f"| kNN k={k} | top-1 {accuracy['top1']:.2f} %, top-5 {accuracy['top5']:.2f} % |"
        )
    lines.append(f"| wall time | {row['wall_s']:.1f} s |")
    note = (
        "kNN, t-SNE and the neighbour grid use the pretrained backbone's features "
        "(identity view, cached in the checkpoint folder), whatever the probe mode."
    )
    sections = [
        ReportSection("This run", "\n".join(lines) + "\n\n" + note),
        ReportSection("Model summary", summary),
    ]
    title = f"Probe: {row['method']} {row['backbone']} on {row['dataset']}"
    return write_report(output_dir, title=title, sections=sections)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (`contrastkit-probe`, `packages/pipelines/probe.py`).

    Returns the exit status: 0 done, 2 bad input (the message says what was expected).
    """
    args = build_parser().parse_args(argv)
    try:
        outcome = run_probe(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"contrastkit-probe: error: {error}", file=sys.stderr)
        return 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if outcome is not None:
        row = outcome.row
        print(
            f"contrastkit-probe: {row['mode']} probe of {row['method']} {row['backbone']} on "
            f"{row['dataset']}: top-1 {row['linear_top1']:.2f} %, kNN (k={row['knn_k']}) top-1 "
            f"{row['knn_top1']:.2f} %, {row['wall_s']:.1f} s; report {outcome.output_dir / 'report.md'}",
            file=sys.stderr,
        )
    return 0
