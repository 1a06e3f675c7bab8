"""The pretrain (and joint training) configuration: one dataclass per YAML section, validated on
construction.

Loaded from YAML, overridden from the command line with `section.field=value`, and saved
(resolved, every default filled in) as `config.yaml` in the run directory and each checkpoint.
`JointTrainingConfig` is the pretrain config plus a `joint:` section.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

METHOD_NAMES: tuple[str, ...] = ("simclr", "npair", "moco", "byol", "isd")
IMIX_METHODS: tuple[str, ...] = ("npair", "moco", "byol")
IMIX_KINDS: tuple[str, ...] = ("none", "mixup", "cutmix")
OPTIMIZER_NAMES: tuple[str, ...] = ("sgd", "lars", "adamw")
DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "image_folder", "tabular")
LOADERS: tuple[str, ...] = ("auto", "device", "dataloader")

# Method defaults for the fields left empty (None) in the YAML.
DEFAULT_TEMPERATURE = {"simclr": 0.5, "npair": 0.2, "moco": 0.2}
DEFAULT_MOMENTUM = {"moco": 0.99, "byol": 0.996, "isd": 0.99}
DEFAULT_FINAL_MOMENTUM = {"byol": 1.0}  # moco and isd keep their momentum constant
ISD_TEMPERATURES = (0.02, 0.02)  # (student, teacher), the ISD paper
ISD_PLUS_TEMPERATURES = (0.1, 0.01)  # (student, teacher), ISD-plus
DEFAULT_AUGMENT = {
    "simclr": "simclr",
    "npair": "simclr",
    "moco": "mocov2",
    "byol": "byol",
    "isd": "isd",
}
DEFAULT_IMAGE_SIZE = {"cifar10": 32, "cifar100": 32}
LR_REFERENCE_BATCH = 256  # scale_lr: lr * global_batch / 256 (Goyal et al. 2017)


def _fail(section: str, name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{section}.{name} must be {allowed}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_types(obj: Any, section: str) -> None:
    """Check (and gently coerce) every field against its annotation.

    Coercions: int -> float for float fields; a numeric string -> float (YAML 1.1 reads `1e-3`
    without a dot as a string); a list -> tuple for tuple fields.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if optional else hint
        if value is None:
            if optional:
                continue
            raise _fail(section, f.name, value, f"a {_type_name(base)} (not empty)")
        setattr(obj, f.name, _coerce(section, f.name, value, base, optional))


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is dict:
        return "mapping"
    if origin is tuple:
        return f"list of {len(typing.get_args(hint))} numbers"
    return getattr(hint, "__name__", str(hint))


def _coerce(section: str, name: str, value: Any, hint: Any, optional: bool) -> Any:
    allowed = f"a {_type_name(hint)}" + (" or null" if optional else "")
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise _fail(section, name, value, "true or false")
        return value
    if hint is int:
        if not _is_int(value):
            raise _fail(section, name, value, allowed)
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _fail(section, name, value, allowed) from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(section, name, value, allowed)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _fail(section, name, value, allowed)
        return value
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _fail(section, name, value, "a mapping with string keys")
        return dict(value)
    if origin is tuple:
        size = len(typing.get_args(hint))
        if not isinstance(value, list | tuple) or len(value) != size:
            raise _fail(section, name, value, allowed)
        return tuple(_coerce(section, name, v, float, False) for v in value)
    raise TypeError(f"unsupported annotation {hint!r} for {section}.{name}")


def _check_choice(section: str, name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{section}.{name} must be one of {list(choices)}, got {value!r}{hint}")


def _check_min(section: str, name: str, value: float | None, low: float, *, strict: bool) -> None:
    if value is None:
        return
    if (value <= low) if strict else (value < low):
        raise _fail(section, name, value, f"{'>' if strict else '>='} {low}")


@dataclass
class MethodConfig:
    """`method:` which objective, and its hyper-parameters (fields a method does not use are ignored)."""

    name: str = "simclr"
    temperature: float | None = None
    queue_size: int = 4096
    momentum: float | None = None
    momentum_final: float | None = None
    student_temperature: float | None = None
    teacher_temperature: float | None = None
    isd_plus: bool = False
    imix: str = "none"
    imix_alpha: float = 1.0

    def __post_init__(self) -> None:
        s = "method"
        _check_types(self, s)
        _check_choice(s, "name", self.name, METHOD_NAMES)
        _check_choice(s, "imix", self.imix, IMIX_KINDS)
        if self.imix != "none" and self.name not in IMIX_METHODS:
            raise ValueError(
                f"method.imix={self.imix!r} is defined only for methods {list(IMIX_METHODS)} "
                f"(i-Mix mixes the query of an in-batch or queue contrast), got method.name={self.name!r}; "
                "use method.imix=none"
            )
        _check_min(s, "imix_alpha", self.imix_alpha, 0.0, strict=True)
        _check_min(s, "queue_size", self.queue_size, 1, strict=False)
        _check_min(s, "temperature", self.temperature, 0.0, strict=True)
        _check_min(s, "student_temperature", self.student_temperature, 0.0, strict=True)
        _check_min(s, "teacher_temperature", self.teacher_temperature, 0.0, strict=True)
        for name in ("momentum", "momentum_final"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise _fail(s, name, value, "in [0, 1]")
        if self.isd_plus and self.name != "isd":
            raise ValueError(
                f"method.isd_plus=true is a preset of the isd method, got method.name={self.name!r}"
            )
        # Fill the defaults of the fields this method uses, so config.yaml records what ran.
        if self.name in DEFAULT_TEMPERATURE and self.temperature is None:
            self.temperature = DEFAULT_TEMPERATURE[self.name]
        if self.name in DEFAULT_MOMENTUM:
            if self.momentum is None:
                self.momentum = DEFAULT_MOMENTUM[self.name]
            if self.momentum_final is None:
                self.momentum_final = DEFAULT_FINAL_MOMENTUM.get(self.name, self.momentum)
        if self.name == "isd":
            preset = ISD_PLUS_TEMPERATURES if self.isd_plus else ISD_TEMPERATURES
            for name, value in zip(("student_temperature", "teacher_temperature"), preset):
                given = getattr(self, name)
                if given is None:
                    setattr(self, name, value)
                elif self.isd_plus and given != value:
                    raise ValueError(
                        f"method.isd_plus=true sets method.{name}={value}, got method.{name}={given}; "
                        "drop one of the two"
                    )


@dataclass
class ModelConfig:
    """`model:` the backbone (any name `contrastkit.backbones.create_backbone` knows) and the heads."""

    backbone: str = "resnet18_cifar"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    projection_hidden_dim: int = 2048
    projection_dim: int = 128
    projection_layers: int = 2
    projection_batch_norm: bool = True
    prediction_hidden_dim: int = 512
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False

    def __post_init__(self) -> None:
        s = "model"
        _check_types(self, s)
        if not self.backbone:
            raise _fail(s, "backbone", self.backbone, "a backbone name")
        for name in ("projection_hidden_dim", "projection_dim", "projection_layers"):
            _check_min(s, name, getattr(self, name), 1, strict=False)
        _check_min(s, "prediction_hidden_dim", self.prediction_hidden_dim, 1, strict=False)


@dataclass
class DataConfig:
    """`data:` what to train on and how views are made."""

    dataset: str = "cifar10"
    data_dir: str = "data"
    image_size: int | None = None
    train_subset: int | None = None
    augment: str | None = None
    download: bool = False
    tabular_options: dict[str, Any] = field(default_factory=dict)
    loader: str = "auto"
    num_workers: int = 4
    knn_train_subset: int | None = None
    knn_test_subset: int | None = None

    def __post_init__(self) -> None:
        s = "data"
        _check_types(self, s)
        _check_choice(s, "dataset", self.dataset, DATASETS)
        _check_choice(s, "loader", self.loader, LOADERS)
        for name in ("image_size", "train_subset", "knn_train_subset", "knn_test_subset"):
            _check_min(s, name, getattr(self, name), 1, strict=False)
        _check_min(s, "num_workers", self.num_workers, 0, strict=False)
        if self.dataset != "tabular" and self.tabular_options:
            raise ValueError(
                f"data.tabular_options is only for data.dataset=tabular, got data.dataset={self.dataset!r}"
            )
        if self.loader == "dataloader" and self.dataset != "image_folder":
            raise ValueError(
                f"data.loader=dataloader is only for data.dataset=image_folder (the others are held "
                f"in memory on the device), got data.dataset={self.dataset!r}"
            )
        if self.image_size is None:
            if self.dataset == "image_folder":
                raise ValueError(
                    "data.image_size is required for data.dataset=image_folder (images are resized to it)"
                )
            self.image_size = DEFAULT_IMAGE_SIZE.get(self.dataset)
        if self.loader == "auto":
            self.loader = "dataloader" if self.dataset == "image_folder" else "device"


@dataclass
class OptimizerConfig:
    """`optimizer:` the update rule; weight decay never applies to biases and norm-layer parameters."""

    name: str = "sgd"
    lr: float = 0.06
    scale_lr: bool = True
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lars_eta: float = 0.02
    final_lr_fraction: float = 0.0

    def __post_init__(self) -> None:
        s = "optimizer"
        _check_types(self, s)
        _check_choice(s, "name", self.name, OPTIMIZER_NAMES)
        _check_min(s, "lr", self.lr, 0.0, strict=True)
        _check_min(s, "weight_decay", self.weight_decay, 0.0, strict=False)
        _check_min(s, "eps", self.eps, 0.0, strict=True)
        _check_min(s, "lars_eta", self.lars_eta, 0.0, strict=True)
        if not 0.0 <= self.momentum < 1.0:
            raise _fail(s, "momentum", self.momentum, "in [0, 1)")
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("optimizer.nesterov=true needs optimizer.momentum > 0, got 0.0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise _fail(s, "betas", list(self.betas), "two numbers in [0, 1)")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise _fail(s, "final_lr_fraction", self.final_lr_fraction, "in [0, 1]")


@dataclass
class TrainConfig:
    """`train:` the loop, checkpoints and monitoring. Mixed precision is accelerate's flag."""

    epochs: int = 200
    batch_size: int = 512
    warmup_epochs: float = 10.0
    grad_accum: int = 1
    clip_grad: float | None = None
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_last: int = 3
    knn_every: int = 10
    knn_k: int = 200
    knn_temperature: float = 0.1
    online_linear: bool = False
    output_dir: str = "runs/pretrain"
    progress_bar: bool = True

    def __post_init__(self) -> None:
        s = "train"
        _check_types(self, s)
        for name in ("epochs", "batch_size", "grad_accum", "log_every", "keep_last", "knn_k"):
            _check_min(s, name, getattr(self, name), 1, strict=False)
        for name in ("checkpoint_every", "knn_every", "seed"):
            _check_min(s, name, getattr(self, name), 0, strict=False)
        _check_min(s, "warmup_epochs", self.warmup_epochs, 0.0, strict=False)
        _check_min(s, "clip_grad", self.clip_grad, 0.0, strict=True)
        _check_min(s, "knn_temperature", self.knn_temperature, 0.0, strict=True)
        if self.warmup_epochs > self.epochs:
            raise _fail(s, "warmup_epochs", self.warmup_epochs, f"<= train.epochs ({self.epochs})")
        if not self.output_dir:
            raise _fail(s, "output_dir", self.output_dir, "a directory path")


@dataclass
class JointConfig:
    """`joint:` supervised + self-supervised training (`joint.py`):
    loss = CE(classifier(backbone(views[0])), labels) + ssl_weight * the method's loss."""

    ssl_weight: float = 1.0
    label_smoothing: float = 0.0
    eval_every: int = 1

    def __post_init__(self) -> None:
        s = "joint"
        _check_types(self, s)
        _check_min(s, "ssl_weight", self.ssl_weight, 0.0, strict=False)
        _check_min(s, "eval_every", self.eval_every, 1, strict=False)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise _fail(s, "label_smoothing", self.label_smoothing, "in [0, 1)")


SECTIONS: dict[str, type] = {
    "method": MethodConfig,
    "model": ModelConfig,
    "data": DataConfig,
    "optimizer": OptimizerConfig,
    "train": TrainConfig,
}


@dataclass
class PretrainConfig:
    """The whole pretrain run: five sections, checked together after each is checked alone."""

    method: MethodConfig = field(default_factory=MethodConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"{name} must be a {cls.__name__}, got {getattr(self, name)!r}")
        tabular = self.data.dataset == "tabular"
        if self.data.augment is None:
            self.data.augment = "identity" if tabular else DEFAULT_AUGMENT[self.method.name]
        if self.method.imix == "cutmix" and tabular:
            raise ValueError(
                "method.imix=cutmix pastes image boxes and needs images, got data.dataset='tabular'; "
                "use method.imix=mixup"
            )
        if tabular and self.model.backbone != "mlp":
            raise ValueError(
                f"data.dataset=tabular gives (N, F) rows; model.backbone must be 'mlp', got {self.model.backbone!r}"
            )
        if not tabular and self.model.backbone == "mlp":
            raise ValueError(
                f"model.backbone='mlp' takes (N, F) rows and needs data.dataset=tabular, got {self.data.dataset!r}"
            )


@dataclass
class JointTrainingConfig(PretrainConfig):
    """A joint training run: the pretrain sections plus `joint` (the supervised term's weighting)."""

    joint: JointConfig = field(default_factory=JointConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.joint, JointConfig):
            raise ValueError(f"joint must be a JointConfig, got {self.joint!r}")
        if self.train.online_linear:
            raise ValueError(
                "train.online_linear=true adds a detached probe, but joint training trains its "
                "classifier on the backbone itself; use train.online_linear=false"
            )


def config_sections(config_class: type[PretrainConfig] = PretrainConfig) -> dict[str, type]:
    """Section name -> dataclass of a config class (SECTIONS for PretrainConfig, plus `joint` for
    JointTrainingConfig)."""
    hints = typing.get_type_hints(config_class)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_class)}


# ---------------------------------------------------------------- dicts, YAML, overrides


def config_to_dict(config: PretrainConfig) -> dict[str, dict[str, Any]]:
    """The resolved config as plain YAML-able dicts (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {
        name: {
            f.name: plain(getattr(getattr(config, name), f.name)) for f in dataclasses.fields(cls)
        }
        for name, cls in config_sections(type(config)).items()
    }


def _unknown_key(key: str, valid: Sequence[str], where: str) -> ValueError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown key {key!r} in {where}; valid keys: {sorted(valid)}.{hint}")


def config_from_dict(
    data: Mapping[str, Any] | None, config_class: type[PretrainConfig] = PretrainConfig
) -> PretrainConfig:
    """Build and validate a config (PretrainConfig, or `config_class`) from `{section: {field: value}}`;
    missing fields take defaults.

    Raises ValueError for an unknown section or field (listing the valid ones, with the closest
    match) and for any invalid value (naming `section.field`, the value and what is allowed).
    """
    known = config_sections(config_class)
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ValueError(f"a config must be a mapping of sections {list(known)}, got {data!r}")
    sections: dict[str, Any] = {}
    for name, values in data.items():
        if name not in known:
            raise _unknown_key(str(name), list(known), "the config's top level")
        values = {} if values is None else values
        if not isinstance(values, Mapping):
            raise ValueError(f"config section {name!r} must be a mapping of fields, got {values!r}")
        cls = known[name]
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in valid:
                raise _unknown_key(str(key), valid, f"section {name!r}")
        sections[name] = cls(**values)
    return config_class(**sections)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"section.field=value"` -> (["section", "field"], YAML-parsed value).

    Deeper keys address entries of mapping fields: `model.backbone_kwargs.width=64`.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    path = key.split(".")
    if not sep or len(path) < 2 or not all(path):
        raise ValueError(
            f"an override must look like section.field=value (e.g. optimizer.lr=0.3), got {text!r}"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ValueError(f"the value of override {text!r} is not valid YAML: {error}") from None
    return path, value


def apply_overrides(
    data: Mapping[str, Any],
    overrides: Sequence[str],
    config_class: type[PretrainConfig] = PretrainConfig,
) -> dict[str, Any]:
    """A copy of the raw config dict with every `section.field=value` override applied (in order)."""
    known = config_sections(config_class)
    result: dict[str, Any] = {k: dict(v or {}) for k, v in data.items()}
    for text in overrides:
        path, value = parse_override(text)
        section, name, *deeper = path
        if section not in known:
            raise _unknown_key(section, list(known), f"override {text!r}")
        valid = [f.name for f in dataclasses.fields(known[section])]
        if name not in valid:
            raise _unknown_key(name, valid, f"section {section!r} (override {text!r})")
        target = result.setdefault(section, {})
        if deeper:
            current = target.get(name)
            if current is None:
                current = {}
            if not isinstance(current, Mapping):
                raise ValueError(
                    f"override {text!r} addresses a key inside {section}.{name}, which is not a mapping"
                )
            target[name] = node = dict(current)
            for key in deeper[:-1]:
                child = node.get(key)
                node[key] = dict(child) if isinstance(child, Mapping) else {}
                node = node[key]
            node[deeper[-1]] = value
        else:
            target[name] = value
    return result


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping in a YAML config file (FileNotFoundError / ValueError when unusable)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"config file {str(path)!r} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(
            f"config file {str(path)!r} must hold a mapping of sections {list(SECTIONS)}, got {type(data).__name__}"
        )
    return dict(data)


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    config_class: type[PretrainConfig] = PretrainConfig,
) -> PretrainConfig:
    """Read a YAML config (or start from the defaults when `path` is None), apply overrides, validate.

    config_class: PretrainConfig (default) or JointTrainingConfig (adds the `joint:` section).
    """
    data = read_config_file(path) if path is not None else {}
    return config_from_dict(apply_overrides(data, overrides, config_class), config_class)


def config_to_yaml(config: PretrainConfig) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)


def save_config(config: PretrainConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(config_to_yaml(config))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
