"""The pretrain (and joint training) config sections: one dataclass per YAML section, validated on
construction, and the two whole-run configs built from them.

Each field's own rule (a choice, a bound) is declared beside it as metadata (config/checks.py);
`__post_init__` checks the fields, then what involves several. `JointTrainingConfig` is the
pretrain config plus a `joint:` section. Method-specific defaults (temperature, momentum, augment
recipe, ISD presets) come from the method registry, which imports torch: building a MethodConfig
or a whole config loads it, importing this module does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contrastkit.pipelines import methods
from contrastkit.pipelines.config.checks import (
    above,
    at_least,
    check_fields,
    field_error,
    one_of,
    rule,
)

IMIX_KINDS: tuple[str, ...] = ("none", "mixup", "cutmix")
OPTIMIZER_NAMES: tuple[str, ...] = ("sgd", "lars", "adamw")
SCHEDULES: tuple[str, ...] = ("warmup_cosine", "step")
DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "image_folder", "tabular")
LOADERS: tuple[str, ...] = ("auto", "device", "dataloader")
DEFAULT_IMAGE_SIZE = {"cifar10": 32, "cifar100": 32}
LR_REFERENCE_BATCH = 256  # scale_lr: lr * global_batch / 256 (Goyal et al. 2017)
TABULAR_AUGMENT = "identity_views"  # rows have no augmentation of their own: both views are the row

# Rules several fields share.
_IN_0_1 = rule(lambda value: 0.0 <= value <= 1.0, "in [0, 1]")
_IN_0_1_OPEN = rule(lambda value: 0.0 <= value < 1.0, "in [0, 1)")


def _methods_with(flag: str) -> list[str]:
    """The registered methods whose class sets `flag` (e.g. supports_imix), for messages."""
    return [name for name, cls in methods.METHODS.items() if getattr(cls, flag)]


@dataclass
class MethodConfig:
    """`method:` which objective, and its hyper-parameters (fields a method does not use are ignored)."""

    # Checked on the registry (and by the command line first on methods.method_names()).
    name: str = "simclr"
    temperature: float | None = field(default=None, metadata=above(0.0))
    queue_size: int = field(default=4096, metadata=at_least(1))
    momentum: float | None = field(default=None, metadata=_IN_0_1)
    momentum_final: float | None = field(default=None, metadata=_IN_0_1)
    student_temperature: float | None = field(default=None, metadata=above(0.0))
    teacher_temperature: float | None = field(default=None, metadata=above(0.0))
    isd_plus: bool = False
    imix: str = field(default="none", metadata=one_of(IMIX_KINDS))
    imix_alpha: float = field(default=1.0, metadata=above(0.0))
    symmetric: bool = False
    separate_forwards: bool = False
    # Fields of one or two methods each (None: the method's `method_defaults` fill what it uses).
    base_temperature: float | None = field(default=None, metadata=above(0.0))  # supcon
    lambda_offdiag: float | None = field(default=None, metadata=at_least(0.0))  # barlow_twins
    scale_loss: float | None = field(default=None, metadata=above(0.0))  # barlow_twins
    sim_coeff: float | None = field(default=None, metadata=at_least(0.0))  # vicreg
    std_coeff: float | None = field(default=None, metadata=at_least(0.0))  # vicreg
    cov_coeff: float | None = field(default=None, metadata=at_least(0.0))  # vicreg
    num_prototypes: int | None = field(default=None, metadata=at_least(1))  # dino, swav
    warmup_teacher_temperature: float | None = field(default=None, metadata=above(0.0))  # dino
    warmup_teacher_temperature_epochs: int | None = field(default=None, metadata=at_least(0))
    norm_last_layer: bool | None = None  # dino
    center_momentum: float | None = field(default=None, metadata=_IN_0_1_OPEN)  # dino
    sinkhorn_epsilon: float | None = field(default=None, metadata=above(0.0))  # swav
    sinkhorn_iterations: int | None = field(default=None, metadata=at_least(1))  # swav
    freeze_prototypes_epochs: int | None = field(default=None, metadata=at_least(0))  # swav, dino
    queue_start_epoch: int | None = field(default=None, metadata=at_least(0))  # swav

    def __post_init__(self) -> None:
        s = "method"
        check_fields(self, s)
        method = methods.method_class(self.name)
        refusal = method.imix_refusal(self.imix)
        if refusal is not None:
            raise ValueError(refusal)
        if self.symmetric and not method.supports_symmetric:
            raise ValueError(
                f"method.symmetric=true (both directions, one queue each) is defined for methods "
                f"{_methods_with('supports_symmetric')}, got method.name={self.name!r}"
            )
        if self.isd_plus and method.isd_plus_temperatures is None:
            raise ValueError(
                f"method.isd_plus=true is a preset of the isd method, got method.name={self.name!r}"
            )
        # Fill the defaults of the fields this method uses, so config.yaml records what ran.
        for name, value in method.method_defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
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

    backbone: str = field(default="resnet18_cifar", metadata=rule(bool, "a backbone name"))
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    projection_hidden_dim: int = field(default=2048, metadata=at_least(1))
    projection_dim: int = field(default=128, metadata=at_least(1))
    # 0 layers: no projection head, the backbone's features are the embeddings (ISD).
    projection_layers: int = field(default=2, metadata=at_least(0))
    projection_batch_norm: bool = True
    projection_output_batch_norm: bool = False
    prediction_hidden_dim: int = field(default=512, metadata=at_least(1))
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "model")


@dataclass
class DataConfig:
    """`data:` what to train on and how views are made."""

    dataset: str = field(default="cifar10", metadata=one_of(DATASETS))
    data_dir: str = "data"
    image_size: int | None = field(default=None, metadata=at_least(1))
    train_subset: int | None = field(default=None, metadata=at_least(1))
    augment: str | None = None
    augment_options: dict[str, Any] = field(default_factory=dict)
    download: bool = False
    tabular_options: dict[str, Any] = field(default_factory=dict)
    loader: str = field(default="auto", metadata=one_of(LOADERS))
    num_workers: int = field(default=4, metadata=at_least(0))
    knn_train_subset: int | None = field(default=None, metadata=at_least(1))
    knn_test_subset: int | None = field(default=None, metadata=at_least(1))
    skip_bad_images: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "data")
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


def _increasing_positive(epochs: tuple[float, ...]) -> bool:
    return all(e > 0 for e in epochs) and list(epochs) == sorted(set(epochs))


@dataclass
class OptimizerConfig:
    """`optimizer:` the update rule; weight decay never applies to biases and norm-layer parameters."""

    name: str = field(default="sgd", metadata=one_of(OPTIMIZER_NAMES))
    lr: float = field(default=0.06, metadata=above(0.0))
    scale_lr: bool = True
    weight_decay: float = field(default=5e-4, metadata=at_least(0.0))
    momentum: float = field(default=0.9, metadata=_IN_0_1_OPEN)
    nesterov: bool = False
    betas: tuple[float, float] = field(
        default=(0.9, 0.999),
        metadata=rule(lambda b: all(0.0 <= x < 1.0 for x in b), "two numbers in [0, 1)"),
    )
    eps: float = field(default=1e-8, metadata=above(0.0))
    lars_eta: float = field(default=0.02, metadata=above(0.0))
    clip_lr: bool = False
    exclude_bias_and_norm: bool = True
    schedule: str = field(default="warmup_cosine", metadata=one_of(SCHEDULES))
    final_lr_fraction: float = field(default=0.0, metadata=_IN_0_1)
    lr_decay_epochs: tuple[float, ...] = field(
        default=(), metadata=rule(_increasing_positive, "increasing epochs > 0")
    )
    lr_decay_factor: float = field(
        default=0.2, metadata=rule(lambda value: 0.0 < value <= 1.0, "in (0, 1]")
    )

    def __post_init__(self) -> None:
        s = "optimizer"
        check_fields(self, s)
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("optimizer.nesterov=true needs optimizer.momentum > 0, got 0.0")
        if self.clip_lr and self.name != "lars":
            raise ValueError(
                f"optimizer.clip_lr=true clips LARS's layer-wise rate and needs optimizer.name=lars, "
                f"got optimizer.name={self.name!r}"
            )
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


@dataclass
class TrainConfig:
    """`train:` the loop, checkpoints and monitoring. Mixed precision is accelerate's flag."""

    epochs: int = field(default=200, metadata=at_least(1))
    batch_size: int = field(default=512, metadata=at_least(1))
    warmup_epochs: float = field(default=10.0, metadata=at_least(0.0))
    grad_accum: int = field(default=1, metadata=at_least(1))
    clip_grad: float | None = field(default=None, metadata=above(0.0))
    seed: int = field(default=0, metadata=at_least(0))
    log_every: int = field(default=50, metadata=at_least(1))
    checkpoint_every: int = field(default=1000, metadata=at_least(0))
    keep_last: int = field(default=3, metadata=at_least(1))
    knn_every: int = field(default=10, metadata=at_least(0))
    knn_k: int = field(default=200, metadata=at_least(1))
    knn_temperature: float = field(default=0.1, metadata=above(0.0))
    online_linear: bool = False
    output_dir: str = field(default="runs/pretrain", metadata=rule(bool, "a directory path"))
    progress_bar: bool = True

    def __post_init__(self) -> None:
        check_fields(self, "train")
        if self.warmup_epochs > self.epochs:
            # Typically a shipped config shortened with train.epochs=N alone: say the whole fix.
            raise ValueError(
                f"train.warmup_epochs must be <= train.epochs ({self.epochs}), got "
                f"{self.warmup_epochs}; to shorten a run set both, e.g. "
                f"train.epochs={self.epochs} train.warmup_epochs={_shorter_warmup(self.epochs)}"
            )


def _shorter_warmup(epochs: int) -> float | int:
    """A warm-up for an `epochs`-long run: a tenth of it (rounded to 0.1), 0 below 1 epoch."""
    tenth = round(epochs / 10, 1)
    return 0 if tenth < 0.1 else tenth


@dataclass
class JointConfig:
    """`joint:` supervised + self-supervised training (`joint.py`):
    loss = CE(classifier(backbone(views[0])), labels) + ssl_weight * the method's loss."""

    ssl_weight: float = field(default=1.0, metadata=at_least(0.0))
    label_smoothing: float = field(default=0.0, metadata=_IN_0_1_OPEN)
    eval_every: int = field(default=1, metadata=at_least(1))

    def __post_init__(self) -> None:
        check_fields(self, "joint")


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
        # The backbone names live with the backbones (torch): imported here, not at module import.
        from contrastkit.backbones import TABULAR_BACKBONE_NAMES

        tabular = self.data.dataset == "tabular"
        if self.data.augment is None:
            method = methods.method_class(self.method.name)
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
