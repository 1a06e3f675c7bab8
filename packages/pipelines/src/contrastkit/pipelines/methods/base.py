"""What every pretrain method is: an nn.Module that turns a batch of views into a loss.

Also the pieces methods share: the encoder (backbone + projection head, or none), forwards of
several views in one or separate BatchNorm batches, i-Mix on the query input, and a key-encoder
forward with MoCo's shuffle-BN across processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from contrastkit.backbones import PredictionHead, ProjectionHead
from contrastkit.objectives import MomentumTeacher, cosine_momentum, imix_cutmix, imix_mixup
from contrastkit.objectives.distributed import all_gather_no_grad, world

if TYPE_CHECKING:
    # Only for annotations: the config imports the method registry to validate and fill defaults.
    from contrastkit.pipelines.config import MethodConfig, ModelConfig


@dataclass
class MethodOutput:
    """What one forward of a method returns to the training loop.

    loss: float32 scalar, the self-supervised objective on this process's batch.
    features: (M, F) backbone features of the inputs the student saw, detached (they feed
        the online linear classifier, which must not train the backbone).
    label_weights: (M, N) float rows that say which of the batch's N samples feature row i
        comes from (i-Mix mixes two), or None when row i is simply sample i % N.
    metrics: further scalars the method logs for this batch, metrics.csv column -> 0-dim float
        tensor on the batch's device (read back only on metrics rows), e.g. NNCLR's `nn_top1`;
        each name must be a column of the run's metrics.csv (METRIC_COLUMNS).
    """

    loss: Tensor
    features: Tensor
    label_weights: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)


class Encoder(nn.Module):
    """backbone -> projection head. `forward(x)` returns (features (N, F), projection (N, D)).

    With `projection = nn.Identity()` (model.projection_layers = 0) the projection is the
    features themselves, D = F.
    """

    def __init__(self, backbone: nn.Module, projection: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projection = projection

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.backbone(x)
        return features, self.projection(features)


def two_views(views: list[Tensor]) -> tuple[Tensor, Tensor]:
    """The two views a method contrasts; a single view (the `identity_views` recipe) is used twice."""
    if len(views) == 1:
        return views[0], views[0]
    if len(views) != 2:
        raise ValueError(f"pretrain methods take 1 or 2 views, got {len(views)}")
    return views[0], views[1]


def global_and_local_crops(views: list[Tensor]) -> list[Tensor]:
    """The crops of a multi-crop method: views[0:2] global, views[2:] local; one view is used as
    both global crops (the `identity_views` recipe). Every crop must hold the same N samples."""
    if not views:
        raise ValueError("a multi-crop method needs at least 1 view, got 0")
    crops = [views[0], views[0]] if len(views) == 1 else list(views)
    sizes = [v.shape[0] for v in crops]
    if len(set(sizes)) != 1:
        raise ValueError(f"every view must hold the same samples, got batch sizes {sizes}")
    if crops[0].shape != crops[1].shape:
        raise ValueError(
            "the two global views (views[0], views[1]) must have the same shape, got "
            f"{tuple(crops[0].shape)} and {tuple(crops[1].shape)}"
        )
    return crops


@torch.no_grad()
def shuffled_key_forward(encoder: nn.Module, x: Tensor, seed: int) -> Tensor:
    """`encoder(x)[1]` (the projection) computed with MoCo's shuffle-BN when several processes run.

    With W > 1 processes the key batch is gathered from every rank, permuted with a permutation
    drawn from `seed` (the same on every rank), each rank encodes its slice of the permuted batch,
    and the outputs are gathered and un-permuted, so rank r gets back the keys of its own samples.
    BatchNorm statistics of the keys then come from a different subset of samples than those of
    the queries, which stops the network from cheating through batch statistics (He et al. 2020,
    section 3.3). With one process the batch is encoded as it is: permuting samples within one
    BatchNorm batch leaves its statistics unchanged, so a shuffle would be a no-op; the query and
    key still have separate BatchNorm batches because they are encoded by separate forwards.
    """
    rank, world_size = world()
    if world_size == 1:
        return encoder(x)[1]
    n = x.shape[0]
    everything = all_gather_no_grad(x)
    # Drawn on the batch's device (no host-to-device copy); the same seed and device type give
    # the same permutation on every rank.
    generator = torch.Generator(device=x.device).manual_seed(seed)
    permutation = torch.randperm(world_size * n, generator=generator, device=x.device)
    keys = encoder(everything[permutation[rank * n : (rank + 1) * n]])[1]
    gathered = all_gather_no_grad(keys)
    unshuffled = torch.empty_like(gathered)
    unshuffled[permutation] = gathered
    return unshuffled[rank * n : (rank + 1) * n]


def projection_head(
    model: ModelConfig, in_dim: int, *, output_affine: bool = True, output_bias: bool | None = None
) -> nn.Module:
    """The projection head a `model:` section describes, on (N, in_dim) features; nn.Identity
    for `projection_layers = 0` (no head: ISD uses the backbone's features as embeddings).
    output_affine, output_bias: as `ProjectionHead`'s (a method's own head shape: SimSiam's and
    MoCo v3's output BatchNorm has no affine parameters)."""
    if model.projection_layers == 0:
        if model.projection_output_batch_norm:
            raise ValueError(
                "model.projection_output_batch_norm=true puts a BatchNorm on the projection "
                "head's output and needs a head, got model.projection_layers=0 (no head)"
            )
        return nn.Identity()
    return ProjectionHead(
        in_dim,
        model.projection_hidden_dim,
        model.projection_dim,
        num_layers=model.projection_layers,
        batch_norm=model.projection_batch_norm,
        output_batch_norm=model.projection_output_batch_norm,
        output_affine=output_affine,
        output_bias=output_bias,
    )


class PretrainMethod(nn.Module):
    """Base class. A method owns its student encoder (and teacher, heads, queue) and computes the loss.

    Every method has `self.encoder` = backbone + projection head (built here). A subclass lives in
    its own module of this package, where the registry (`methods.METHODS`) finds it by its `name`,
    declares the class attributes below, adds its modules in `__init__` after
    `super().__init__(...)` and implements `forward`. A method with an EMA teacher sets
    `self.teacher = MomentumTeacher(self.encoder)` (or subclasses SelfDistillationMethod, which also
    adds a predictor head); `on_optimizer_step` then moves it after every optimizer step.

    The class attributes are what the config fills in for fields left empty, so that config.yaml
    records what ran (None: the method does not use that field):
        name: the `method.name` that selects the method ("" on abstract classes).
        supports_imix: whether `method.imix` may be mixup / cutmix.
        default_augment: the `data.augment` recipe of image datasets (`make_views` name).
        default_temperature: `method.temperature`.
        default_momentum: `method.momentum` of the EMA teacher.
        default_final_momentum: `method.momentum_final`; None with a teacher keeps the momentum
            constant (`momentum_final` = `momentum`).
        default_student_teacher_temperatures: (`method.student_temperature`,
            `method.teacher_temperature`) of a distillation method.
        isd_plus_temperatures: the (student, teacher) preset `method.isd_plus=true` sets; None
            where `isd_plus` is not allowed.
        supports_symmetric: whether `method.symmetric` (both directions, a queue each) is defined.
        method_defaults: `method:` fields this method reads, and the values it fills in for them
            when the config leaves them empty (e.g. DINO's num_prototypes).
        imix_unsupported_reason: for a method without i-Mix, why i-Mix does not apply (said in
            the error for `method.imix` other than none).
    """

    name: ClassVar[str] = ""
    supports_imix: ClassVar[bool] = False
    default_augment: ClassVar[str] = ""
    default_temperature: ClassVar[float | None] = None
    default_momentum: ClassVar[float | None] = None
    default_final_momentum: ClassVar[float | None] = None
    default_student_teacher_temperatures: ClassVar[tuple[float, float] | None] = None
    isd_plus_temperatures: ClassVar[tuple[float, float] | None] = None
    supports_symmetric: ClassVar[bool] = False
    method_defaults: ClassVar[Mapping[str, Any]] = {}
    imix_unsupported_reason: ClassVar[str] = ""

    @classmethod
    def imix_refusal(cls, imix: str) -> str | None:
        """The error for `method.imix=imix` on this method (why i-Mix does not apply, and the
        methods it does); None when allowed. The config and the method both say it."""
        if imix == "none" or cls.supports_imix:
            return None
        from contrastkit.pipelines.methods import METHODS

        supported = [name for name, method in METHODS.items() if method.supports_imix]
        why = (
            cls.imix_unsupported_reason or "i-Mix mixes the query of an in-batch or queue contrast"
        )
        return (
            f"method.imix={imix!r} is defined only for methods {supported} ({why}), got "
            f"method.name={cls.name!r}; use method.imix=none"
        )

    @classmethod
    def preset(cls, method: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The original recipe's values for fields a config leaves out: section -> field -> value.

        `method` is the config's raw `method:` mapping (so a flag such as `isd_plus` can switch
        presets). `config_from_dict` fills these before building the sections; fields the config
        sets win. Default: no preset (the sections' own defaults apply).
        """
        return {}

    def __init__(
        self, backbone: nn.Module, method: MethodConfig, model: ModelConfig, *, seed: int = 0
    ) -> None:
        """backbone: exposes `num_features`; method, model: the config sections this method
        reads; seed: the run's seed (`train.seed`), for the queue and the shuffle-BN permutation."""
        super().__init__()
        if method.name != self.name:
            raise ValueError(
                f"{type(self).__name__} needs method.name={self.name!r}, got {method.name!r}"
            )
        refusal = self.imix_refusal(method.imix)
        if refusal is not None:
            raise ValueError(refusal)
        num_features = getattr(backbone, "num_features", None)
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(
                f"the backbone must expose an int attribute num_features >= 1, got {num_features!r}"
            )
        self.method_config = method
        self.model_config = model
        self.seed = seed
        self.encoder = Encoder(backbone, self.projection_head(num_features))
        # The width of what the losses compare: the projection, or the backbone's features when
        # there is no projection head. Queues and predictors are sized from it.
        self.embedding_dim = model.projection_dim if model.projection_layers else num_features
        self.teacher: MomentumTeacher | None = None

    @property
    def backbone(self) -> nn.Module:
        """The student backbone: what the run trains and what `backbone.pt` saves."""
        return self.encoder.backbone

    @property
    def num_features(self) -> int:
        return int(self.encoder.backbone.num_features)

    def backbones(self) -> list[nn.Module]:
        """Every backbone the method runs (student, and teacher if any): what `model.compile` compiles."""
        found = [self.encoder.backbone]
        if self.teacher is not None:
            found.append(self.teacher.module.backbone)
        return found

    def projection_head(self, in_dim: int) -> nn.Module:
        """The model section's projection head on `in_dim` features (`projection_head`)."""
        return projection_head(self.model_config, in_dim)

    def encode(self, network: nn.Module, inputs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """(features, projections) of `network` (the encoder or its teacher) on the inputs, each
        (sum of N_i, .) stacked in input order.

        Consecutive inputs of one shape go through one forward of their concatenation, so one
        BatchNorm batch over them; inputs of another resolution (multi-crop's local crops) start
        a new forward, as DINO's MultiCropWrapper groups its crops. With
        `method.separate_forwards` every input is its own forward, so each input (view) is
        normalised by its own batch statistics, as solo-learn forwards its views.
        """
        if len(inputs) == 1:
            return network(inputs[0])
        groups: list[list[Tensor]] = []
        for x in inputs:
            same = groups and groups[-1][-1].shape[1:] == x.shape[1:]
            if same and not self.method_config.separate_forwards:
                groups[-1].append(x)
            else:
                groups.append([x])
        if len(groups) == 1:
            return network(torch.cat(groups[0]))
        outputs = [network(group[0] if len(group) == 1 else torch.cat(group)) for group in groups]
        return torch.cat([f for f, _ in outputs]), torch.cat([z for _, z in outputs])

    def predict_pair(self, projections: Tensor) -> tuple[Tensor, Tensor]:
        """`self.predictor` on the (2N, D) projections of two views: (p1, p2), each (N, D). One
        forward of both (one BatchNorm batch), or with `method.separate_forwards` one per view, so
        the predictor's BatchNorm normalises each view alone too (solo-learn)."""
        predictor: nn.Module = self.predictor  # type: ignore[assignment]
        if self.method_config.separate_forwards:
            p1, p2 = (predictor(z) for z in projections.chunk(2))
            return p1, p2
        p1, p2 = predictor(projections).chunk(2)
        return p1, p2

    def mix(self, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        """i-Mix on a query batch: (mixed x, (N, N) virtual labels), or (x, None) without i-Mix."""
        imix = self.method_config.imix
        if imix == "none":
            return x, None
        mixer = imix_mixup if imix == "mixup" else imix_cutmix
        return mixer(x, alpha=self.method_config.imix_alpha, generator=generator)

    def mix_both(
        self, view1: Tensor, view2: Tensor, generator: torch.Generator | None
    ) -> tuple[list[Tensor], list[Tensor | None]]:
        """i-Mix on each view as a query batch, view 1's draw first (i-Mix's order when both
        sides are queries): ([inputs1, inputs2], [targets1, targets2])."""
        inputs1, targets1 = self.mix(view1, generator)
        inputs2, targets2 = self.mix(view2, generator)
        return [inputs1, inputs2], [targets1, targets2]

    def key_seed(self, step: int) -> int:
        """Seed of the shuffle-BN permutation of forward number `step`: the same on every rank."""
        return self.seed * 1_000_003 + step

    def forward(
        self,
        views: list[Tensor],
        *,
        step: int,
        epoch: int = 0,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MethodOutput:
        """views: the augmented batch, a list of (N, C, H, W) or (N, F) float tensors (a
        multi-crop recipe gives its 2 global views first, then the local ones, smaller).

        step: index of this forward in the run (micro-batches count), for per-step randomness
        that must agree across ranks. epoch: the 0-based epoch this batch belongs to (for
        per-epoch schedules). labels: (N,) int64 classes of the batch, or None; only supervised
        methods read them. generator: draws the i-Mix mixing on this rank.
        """
        raise NotImplementedError

    def static_lr_modules(self) -> list[nn.Module]:
        """Modules trained at the peak lr throughout, outside the LR schedule (SimSiam's
        predictor); none by default."""
        return []

    def after_backward(self, epoch: int) -> None:
        """After the backward of the micro-batch that completes an optimizer step, before gradient
        clipping and the step itself (e.g. SwAV drops its prototypes' gradients while they are
        frozen). epoch: the 0-based epoch of the batch."""

    @torch.no_grad()
    def on_optimizer_step(self, step: int, total_steps: int) -> None:
        """After optimizer step `step` (0-based) of `total_steps`: move the EMA teacher, if any.

        Momentum follows `cosine_momentum(step, total_steps, method.momentum, method.momentum_final)`
        (constant when the two are equal, as for MoCo and ISD by default).
        """
        if self.teacher is None:
            return
        method = self.method_config
        if method.momentum is None or method.momentum_final is None:
            raise ValueError(f"method {self.name!r} has a teacher but no method.momentum set")
        momentum = cosine_momentum(
            min(step, total_steps), total_steps, method.momentum, method.momentum_final
        )
        self.teacher.update(self.encoder, momentum)


class SelfDistillationMethod(PretrainMethod):
    """A method whose student (encoder + predictor head) learns from an EMA teacher of its encoder
    (BYOL, ISD). Builds `self.predictor` (embedding_dim -> model.prediction_hidden_dim ->
    embedding_dim, where embedding_dim is model.projection_dim, or the backbone's num_features
    without a projection head) and `self.teacher`; abstract (no `name`), so the registry skips it.
    """

    def __init__(
        self, backbone: nn.Module, method: MethodConfig, model: ModelConfig, *, seed: int = 0
    ) -> None:
        super().__init__(backbone, method, model, seed=seed)
        dim = self.embedding_dim
        self.predictor = PredictionHead(dim, model.prediction_hidden_dim, dim)
        self.teacher = MomentumTeacher(self.encoder)


def stacked_label_weights(*weights: Tensor | None, n: int, device: torch.device) -> Tensor | None:
    """Label weights of features stacked from several inputs: None when no input was mixed."""
    if all(w is None for w in weights):
        return None
    eye = torch.eye(n, device=device)
    return torch.cat([eye if w is None else w.to(eye.dtype) for w in weights])
