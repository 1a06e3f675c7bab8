"""Reading a pretrained backbone back: a pretrain (or joint) run directory, one checkpoint folder or
an export folder (`contrastkit-export --format safetensors`), its config and meta, the backbone
rebuilt with its weights, and whether a dataset's inputs can go through it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from contrastkit.backbones import (
    EXPORT_CONFIG_FILE,
    EXPORT_WEIGHTS_FILE,
    WEIGHT_SOURCE_KWARGS,
    create_backbone,
    read_export_config,
    resolve_weights_path,
    unwrap_state_dict,
)
from contrastkit.pipelines.checkpoint import read_meta, resolve_checkpoint
from contrastkit.pipelines.checkpoint_integrity import load_torch_file, verify_checkpoint
from contrastkit.pipelines.config import read_config_file
from contrastkit.pipelines.evaluation.features import extract_features
from contrastkit.pipelines.run_files import (
    BACKBONE_FILE,
    CHECKPOINT_PREFIX,
    CONFIG_FILE,
    META_FILE,
)

if TYPE_CHECKING:
    from contrastkit.pipelines.data import InMemoryDataset

# What --checkpoint must name; every error about a checkpoint path repeats it.
CHECKPOINT_EXPECTED = (
    f"a pretrain run directory holding {CHECKPOINT_PREFIX}<step>/ folders, one checkpoint "
    f"folder holding {BACKBONE_FILE}, {CONFIG_FILE} and {META_FILE}, or an export folder holding "
    f"{EXPORT_WEIGHTS_FILE} and {EXPORT_CONFIG_FILE} (contrastkit-export --format safetensors)"
)
# Export formats whose folder holds weights the probe can load (torchscript holds a program).
PROBE_EXPORT_FORMATS = ("safetensors", "timm")


@dataclass
class PretrainedCheckpoint:
    """One pretrain checkpoint folder (or export folder): its resolved config (a plain dict) and
    meta.json (an export's config.json holds both, as `training_config` and `checkpoint_meta`).

    Only these config keys are read: model.backbone, model.backbone_kwargs, model.projection_*,
    model.channels_last, method.name, data.dataset, data.data_dir, data.image_size,
    data.tabular_options, train.epochs.
    weights_file: the export's weights; None for a checkpoint folder (its backbone.pt).
    """

    path: Path
    config: dict[str, Any]
    meta: dict[str, Any]
    weights_file: Path | None = None

    @property
    def weights(self) -> Path:
        """The file holding the backbone's weights: backbone.pt, or an export's model.safetensors."""
        return self.weights_file or self.path / BACKBONE_FILE

    def get(self, section: str, key: str, default: Any = None) -> Any:
        """`config[section][key]`, or `default` when either is missing."""
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
    def input_kind(self) -> str:
        """ "tabular" or "image": the kind of inputs the backbone was pretrained on."""
        return "tabular" if self.dataset == "tabular" else "image"

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

    @property
    def run_dir(self) -> Path:
        """The run directory holding this checkpoint folder (the folder itself if it stands alone)."""
        return self.path.parent if self.path.name.startswith(CHECKPOINT_PREFIX) else self.path


def _say(text: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:  # every process reads the checkpoint
        print(text, file=sys.stderr, flush=True)


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder `path` names: itself, or the newest checkpoint of a run directory
    that passes its check (a note on stderr names each newer one skipped, and why).

    Raises FileNotFoundError saying what was expected when `path` is neither.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"--checkpoint {str(path)!r} does not exist; expected {CHECKPOINT_EXPECTED}"
        )
    if not path.is_dir():
        raise FileNotFoundError(
            f"--checkpoint {str(path)!r} is a file; expected {CHECKPOINT_EXPECTED}"
        )
    try:
        folder = resolve_checkpoint(path, on_skip=lambda note: _say(f"--checkpoint: {note}"))
    except FileNotFoundError as error:  # (a ValueError lists damaged checkpoints: said as is)
        raise FileNotFoundError(
            f"--checkpoint: {error}; a checkpoint folder holds {BACKBONE_FILE}, {CONFIG_FILE} "
            f"and {META_FILE}"
        ) from None
    missing = [name for name in (BACKBONE_FILE, CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"checkpoint folder {str(folder)!r} lacks {missing}; expected {CHECKPOINT_EXPECTED}"
        )
    return folder


def is_export_folder(path: str | Path) -> bool:
    """A folder holding an export's config.json and no meta.json (a checkpoint folder has one)."""
    path = Path(path).expanduser()
    return (path / EXPORT_CONFIG_FILE).is_file() and not (path / META_FILE).exists()


def load_checkpoint(path: str | Path) -> PretrainedCheckpoint:
    """Resolve `path` (run directory, checkpoint folder or export folder) and read its config and
    meta (`read_checkpoint_folder`, `read_export_folder`)."""
    if is_export_folder(path):
        return read_export_folder(path)
    return read_checkpoint_folder(find_checkpoint(path))


def read_export_folder(path: str | Path) -> PretrainedCheckpoint:
    """The run config and checkpoint meta an export's config.json carries, with its weights file
    checked against the size and SHA-256 recorded there (ValueError naming the file otherwise).

    The backbone's arguments are the export's (`backbone.kwargs`: without pretrained /
    pretrained_path, which said where the run's initial weights came from).
    """
    folder = Path(path).expanduser()
    export = read_export_config(folder) or {}
    source = f"{str(folder / EXPORT_CONFIG_FILE)!r}"
    if export.get("format") not in PROBE_EXPORT_FORMATS:
        raise ValueError(
            f"--checkpoint {str(folder)!r} is a {export.get('format')!r} export; the probe reads "
            f"{' or '.join(PROBE_EXPORT_FORMATS)} exports (contrastkit-export --format safetensors)"
        )
    config, meta = export.get("training_config"), export.get("checkpoint_meta")
    backbone = export.get("backbone")
    if not (isinstance(config, dict) and isinstance(meta, dict) and isinstance(backbone, dict)):
        raise ValueError(
            f"{source} lacks training_config, checkpoint_meta or backbone: not an export of "
            "contrastkit-export"
        )
    model = dict(config.get("model") or {})
    model["backbone_kwargs"] = dict(backbone.get("kwargs") or {})
    checkpoint = PretrainedCheckpoint(
        folder, {**config, "model": model}, meta, weights_file=resolve_weights_path(folder)
    )
    for section, key in (("model", "backbone"), ("data", "dataset")):
        if not checkpoint.get(section, key):
            raise ValueError(f"{source} has no training_config {section}.{key}")
    return checkpoint


def read_checkpoint_folder(folder: Path) -> PretrainedCheckpoint:
    """The config.yaml and meta.json of one checkpoint folder.

    config.yaml and backbone.pt are checked against the sizes and SHA-256 sums meta.json records
    (when it records them): ValueError naming the file and the problem otherwise.
    """
    problems = verify_checkpoint(folder, names=(CONFIG_FILE, BACKBONE_FILE))
    if problems:
        raise ValueError(
            f"checkpoint folder {str(folder)!r} is damaged: " + "; ".join(problems) + "; probe "
            "another checkpoint folder of the run"
        )
    config_file = folder / CONFIG_FILE
    config = read_config_file(config_file)  # ValueError when not YAML or not a mapping
    # resolve_checkpoint only returns folders holding meta.json, so it is there to read.
    checkpoint = PretrainedCheckpoint(folder, config, read_meta(folder))
    for section, key in (("model", "backbone"), ("data", "dataset")):
        if not checkpoint.get(section, key):
            raise ValueError(f"{config_file} has no {section}.{key}; is it a pretrain config?")
    return checkpoint


def build_backbone(
    checkpoint: PretrainedCheckpoint, *, random_init: int | None = None
) -> nn.Module:
    """create_backbone(model.backbone, **model.backbone_kwargs) with the checkpoint's weights
    (backbone.pt, or an export's model.safetensors) loaded, on the CPU.

    pretrained / pretrained_path in the kwargs are left out: they said where the run's initial
    weights came from, and the saved weights replace every one of them.
    random_init: a seed: the same network freshly initialized from it instead (no weights loaded,
    not even a pretrained=True start): the untrained baseline a pretraining must beat.
    """
    kwargs = {
        key: value
        for key, value in checkpoint.backbone_kwargs.items()
        if key not in WEIGHT_SOURCE_KWARGS
    }
    if random_init is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(random_init)
            return create_backbone(checkpoint.backbone_name, **kwargs)
    if checkpoint.weights_file is not None:
        return create_backbone(
            checkpoint.backbone_name, **kwargs, pretrained_path=checkpoint.weights_file
        )
    backbone = create_backbone(checkpoint.backbone_name, **kwargs)
    file = checkpoint.path / BACKBONE_FILE
    state = load_torch_file(file)  # ValueError naming the file when it is empty or damaged
    if not isinstance(state, dict):
        raise ValueError(f"{file} must hold a state dict, got {type(state).__name__}")
    # A state dict saved from a compiled or DDP-wrapped module carries a prefix on every key.
    result = backbone.load_state_dict(unwrap_state_dict(state), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{file} does not match model.backbone={checkpoint.backbone_name!r} with "
            f"backbone_kwargs={checkpoint.backbone_kwargs}: missing keys {result.missing_keys[:5]}, "
            f"unexpected keys {result.unexpected_keys[:5]}"
        )
    return backbone


def check_input_compatibility(
    backbone: nn.Module,
    checkpoint: PretrainedCheckpoint,
    data: InMemoryDataset,
    name: str,
    transform: Callable[[Tensor], Tensor],
) -> None:
    """Raise ValueError when `data`'s inputs cannot go through the checkpoint's backbone."""
    if data.kind != checkpoint.input_kind:
        raise ValueError(
            f"the checkpoint's backbone {checkpoint.backbone_name!r} was pretrained on "
            f"{checkpoint.dataset!r} ({checkpoint.input_kind} inputs) but --data {name!r} gives "
            f"{data.kind} inputs of shape {tuple(data.inputs.shape[1:])}"
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
