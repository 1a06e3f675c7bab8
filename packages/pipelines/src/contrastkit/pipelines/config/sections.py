"""The pretrain (and joint training) config sections: one dataclass per YAML section, validated on
construction, and the two whole-run configs built from them.

`JointTrainingConfig` is the pretrain config plus a `joint:` section. Method-specific defaults
(temperature, momentum, augment recipe, ISD presets) come from the method registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contrastkit.backbones import TABULAR_BACKBONE_NAMES
from contrastkit.pipelines.config.checks import check_choice, check_min, check_types, field_error
from contrastkit.pipelines.methods import METHODS, method_class

IMIX_KINDS: tuple[str, ...] = ("none", "mixup", "cutmix")
OPTIMIZER_NAMES: tuple[str, ...] = ("sgd", "lars", "adamw")
SCHEDULES: tuple[str, ...] = ("warmup_cosine", "step")
DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "image_folder", "tabular")
LOADERS: tuple[str, ...] = ("auto", "device", "dataloader")
DEFAULT_IMAGE_SIZE = {"cifar10": 32, "cifar100": 32}
LR_REFERENCE_BATCH = 256  # scale_lr: lr * global_batch / 256 (Goyal et al. 2017)
TABULAR_AUGMENT = "identity_views"  # rows have no augmentation of their own: both views are the row


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
    symmetric: bool = False
    separate_forwards: bool = False

    def __post_init__(self) -> None:
        s = "method"
        check_types(self, s)
        method = method_class(self.name)
        check_choice(s, "imix", self.imix, IMIX_KINDS)
        if self.imix != "none" and not method.supports_imix:
            imix_methods = [name for name, cls in METHODS.items() if cls.supports_imix]
            raise ValueError(
                f"method.imix={self.imix!r} is defined only for methods {imix_methods} "
                f"(i-Mix mixes the query of an in-batch or queue contrast), got method.name={self.name!r}; "
                "use method.imix=none"
            )
        check_min(s, "imix_alpha", self.imix_alpha, 0.0, strict=True)
        check_min(s, "queue_size", self.queue_size, 1, strict=False)
        check_min(s, "temperature", self.temperature, 0.0, strict=True)
        check_min(s, "student_temperature", self.student_temperature, 0.0, strict=True)
        check_min(s, "teacher_temperature", self.teacher_temperature, 0.0, strict=True)
        for name in ("momentum", "momentum_final"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise field_error(s, name, value, "in [0, 1]")
        if self.symmetric and not method.supports_symmetric:
            symmetric = [name for name, cls in METHODS.items() if cls.supports_symmetric]
            raise ValueError(
                f"method.symmetric=true (both directions, one queue each) is defined for methods "
                f"{symmetric}, got method.name={self.name!r}"
            )
        if self.isd_plus and method.isd_plus_temperatures is None:
            raise ValueError(
                f"method.isd_plus=true is a preset of the isd method, got method.name={self.name!r}"
            )
        # Fill the defaults of the fields this method uses, so config.yaml records what ran.
        if self.temperature is None:
            self.temperature = method.default_temperature
        if method.default_momentum is not None:
            if self.momentum is None:
                self.momentum = method.default_momentum
            if self.momentum_final is None:
                final = method.default_final_momentum
                self.momentum_final = self.momentum if final is None else final
        preset = (
            method.isd_plus_temperatures
            if self.isd_plus
            else method.default_student_teacher_temperatures
        )
        for name, value in zip(("student_temperature", "teacher_temperature"), preset or ()):
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
    projection_output_batch_norm: bool = False
    prediction_hidden_dim: int = 512
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False

    def __post_init__(self) -> None:
        s = "model"
        check_types(self, s)
        if not self.backbone:
            raise field_error(s, "backbone", self.backbone, "a backbone name")
        for name in ("projection_hidden_dim", "projection_dim"):
            check_min(s, name, getattr(self, name), 1, strict=False)
        # 0 layers: no projection head, the backbone's features are the embeddings (ISD).
        check_min(s, "projection_layers", self.projection_layers, 0, strict=False)
        check_min(s, "prediction_hidden_dim", self.prediction_hidden_dim, 1, strict=False)


@dataclass
class DataConfig:
    """`data:` what to train on and how views are made."""

    dataset: str = "cifar10"
    data_dir: str = "data"
    image_size: int | None = None
    train_subset: int | None = None
    augment: str | None = None
    augment_options: dict[str, Any] = field(default_factory=dict)
    download: bool = False
    tabular_options: dict[str, Any] = field(default_factory=dict)
    loader: str = "auto"
    num_workers: int = 4
    knn_train_subset: int | None = None
    knn_test_subset: int | None = None

    def __post_init__(self) -> None:
        s = "data"
        check_types(self, s)
        check_choice(s, "dataset", self.dataset, DATASETS)
        check_choice(s, "loader", self.loader, LOADERS)
        for name in ("image_size", "train_subset", "knn_train_subset", "knn_test_subset"):
            check_min(s, name, getattr(self, name), 1, strict=False)
        check_min(s, "num_workers", self.num_workers, 0, strict=False)
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
    clip_lr: bool = False
    exclude_bias_and_norm: bool = True
    schedule: str = "warmup_cosine"
    final_lr_fraction: float = 0.0
    lr_decay_epochs: tuple[float, ...] = ()
    lr_decay_factor: float = 0.2

    def __post_init__(self) -> None:
        s = "optimizer"
        check_types(self, s)
        check_choice(s, "name", self.name, OPTIMIZER_NAMES)
        check_min(s, "lr", self.lr, 0.0, strict=True)
        check_min(s, "weight_decay", self.weight_decay, 0.0, strict=False)
        check_min(s, "eps", self.eps, 0.0, strict=True)
        check_min(s, "lars_eta", self.lars_eta, 0.0, strict=True)
        if not 0.0 <= self.momentum < 1.0:
            raise field_error(s, "momentum", self.momentum, "in [0, 1)")
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("optimizer.nesterov=true needs optimizer.momentum > 0, got 0.0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise field_error(s, "betas", list(self.betas), "two numbers in [0, 1)")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise field_error(s, "final_lr_fraction", self.final_lr_fraction, "in [0, 1]")
        if self.clip_lr and self.name != "lars":
            raise ValueError(
                f"optimizer.clip_lr=true clips LARS's layer-wise rate and needs optimizer.name=lars, "
                f"got optimizer.name={self.name!r}"
            )
        check_choice(s, "schedule", self.schedule, SCHEDULES)
        epochs = list(self.lr_decay_epochs)
        if self.schedule == "step" and not epochs:
            raise field_error(
                s, "lr_decay_epochs", epochs, "a non-empty list of epochs for schedule=step"
            )
        if self.schedule == "step" and self.final_lr_fraction != 0.0:
            raise ValueError(
                f"optimizer.final_lr_fraction={self.final_lr_fraction} shapes the cosine only, "
                "got optimizer.schedule='step'; drop it (step uses lr_decay_factor)"
            )
        if self.schedule != "step" and epochs:
            raise ValueError(
                f"optimizer.lr_decay_epochs={epochs} is used by optimizer.schedule=step only, "
                f"got optimizer.schedule={self.schedule!r}"
            )
        if any(e <= 0 for e in epochs) or epochs != sorted(set(epochs)):
            raise field_error(s, "lr_decay_epochs", epochs, "increasing epochs > 0")
        if not 0.0 < self.lr_decay_factor <= 1.0:
            raise field_error(s, "lr_decay_factor", self.lr_decay_factor, "in (0, 1]")


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
        check_types(self, s)
        for name in ("epochs", "batch_size", "grad_accum", "log_every", "keep_last", "knn_k"):
            check_min(s, name, getattr(self, name), 1, strict=False)
        for name in ("checkpoint_every", "knn_every", "seed"):
            check_min(s, name, getattr(self, name), 0, strict=False)
        check_min(s, "warmup_epochs", self.warmup_epochs, 0.0, strict=False)
        check_min(s, "clip_grad", self.clip_grad, 0.0, strict=True)
        check_min(s, "knn_temperature", self.knn_temperature, 0.0, strict=True)
        if self.warmup_epochs > self.epochs:
            raise field_error(
                s, "warmup_epochs", self.warmup_epochs, f"<= train.epochs ({self.epochs})"
            )
        if not self.output_dir:
            raise field_error(s, "output_dir", self.output_dir, "a directory path")


@dataclass
class JointConfig:
    """`joint:` supervised + self-supervised training (`joint.py`):
    loss = CE(classifier(backbone(views[0])), labels) + ssl_weight * the method's loss."""

    ssl_weight: float = 1.0
    label_smoothing: float = 0.0
    eval_every: int = 1

    def __post_init__(self) -> None:
        s = "joint"
        check_types(self, s)
        check_min(s, "ssl_weight", self.ssl_weight, 0.0, strict=False)
        check_min(s, "eval_every", self.eval_every, 1, strict=False)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise field_error(s, "label_smoothing", self.label_smoothing, "in [0, 1)")


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
            method = method_class(self.method.name)
            self.data.augment = TABULAR_AUGMENT if tabular else method.default_augment
        if self.method.imix == "cutmix" and tabular:
            raise ValueError(
                "method.imix=cutmix pastes image boxes and needs images, got data.dataset='tabular'; "
                "use method.imix=mixup"
            )
        row_backbone = self.model.backbone in TABULAR_BACKBONE_NAMES
        if tabular and not row_backbone:
            raise ValueError(
                f"data.dataset=tabular gives (N, F) rows; model.backbone must be 'mlp' or "
                f"'imix_mlp5', got {self.model.backbone!r}"
            )
        if not tabular and row_backbone:
            raise ValueError(
                f"model.backbone={self.model.backbone!r} takes (N, F) rows and needs "
                f"data.dataset=tabular, got {self.data.dataset!r}"
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
