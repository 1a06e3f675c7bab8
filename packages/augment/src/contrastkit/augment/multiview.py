"""MultiViewAugment: several independently augmented views of one batch, one call per resolution.

It owns the random generators (one per device, all seeded from one seed) and checkpoints them,
so a resumed run draws the same augmentations as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from contrastkit.augment.params import ViewParams, sample_view_params
from contrastkit.augment.recipes import NoiseRecipe, ViewRecipe
from contrastkit.augment.view import FLOAT_DTYPES, apply_view, check_image_batch

_MAX_SEED = 2**63 - 1

# Recipe fields that only set how often an op happens. A view with probability 0 draws all-False
# masks (or sigma 0), which every op applies as an exact identity, so views that differ only in
# these fields can share one apply_view call that runs each op any of them needs.
PROBABILITY_FIELDS = ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p")


def group_views(views: Sequence[ViewRecipe]) -> tuple[tuple[ViewRecipe, tuple[int, ...]], ...]:
    """Views that one batched ``apply_view`` call can make together, in order of first appearance.

    Views are grouped when their recipes are equal in every field but ``PROBABILITY_FIELDS``
    (same size, crop, strengths, blur kernel, ...). Each group is (recipe of the call: the group's
    recipe with each probability the largest in the group, view indices in order).
    """
    groups: dict[ViewRecipe, list[int]] = {}
    for index, recipe in enumerate(views):
        key = dataclasses.replace(recipe, **dict.fromkeys(PROBABILITY_FIELDS, 0.0))
        groups.setdefault(key, []).append(index)
    merged = []
    for key, indices in groups.items():
        probabilities = {
            name: max(getattr(views[i], name) for i in indices) for name in PROBABILITY_FIELDS
        }
        merged.append((dataclasses.replace(key, **probabilities), tuple(indices)))
    return tuple(merged)


def _device_key(device: torch.device | str) -> str:
    """Canonical name of a device ("cpu", "cuda:0"): a bare "cuda" means the current CUDA device."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


class MultiViewAugment:
    """Draw ``num_views`` augmented views of a batch, each sample with its own random parameters.

    Image views (``ViewRecipe``): ``batch`` is (N, C, H, W) uint8 (0..255) or float (0..1) on any
    device; each view is (N, C, size, size) float32, normalized with ``mean``/``std``, on that device.
    Views that differ only in their probabilities (e.g. DINO's two global crops, or all its local
    crops) are made by ONE ``apply_view`` call on the batch repeated once per view, each view
    with the parameters drawn from its own recipe: the same tensors as one call per view, with
    fewer, larger kernels (``view_groups`` lists the groups). The order of views is kept.
    Noise views (``NoiseRecipe``, tabular or generic data): ``batch`` is (N, ...) float; each view
    is float32 of the same shape: the input plus independent Gaussian noise (none for std = 0).

    Randomness: every parameter is drawn on the batch's own device from a ``torch.Generator`` that
    lives there: one generator per device, each seeded with ``seed`` when first used. CPU and CUDA
    generators are different algorithms, so the same seed gives different (equally valid) views on
    CPU and on CUDA; on one device type, a seed and a restored ``state_dict`` reproduce the views
    exactly. In multi-process training give every rank its own seed (e.g. ``seed + rank``),
    otherwise all ranks draw the same crops for their different images.

    Args:
        views: one recipe per view, all ``ViewRecipe`` or all ``NoiseRecipe``, e.g. what a recipe
            function returns: ``MultiViewAugment(byol_views(32))``.
        mean, std: per-channel normalization on the [0, 1] scale for image views; None = none.
        seed: seeds the generators; None draws one from torch's global generator (so
            ``torch.manual_seed`` makes it reproducible).
        device: create this device's generator now (it is otherwise created on first use).
    """

    def __init__(
        self,
        views: Sequence[ViewRecipe] | Sequence[NoiseRecipe],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        seed: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        views = tuple(views)
        if not views:
            raise ValueError("views must hold at least one recipe, got none")
        if all(isinstance(v, ViewRecipe) for v in views):
            self.is_image = True
        elif all(isinstance(v, NoiseRecipe) for v in views):
            self.is_image = False
        else:
            kinds = [type(v).__name__ for v in views]
            hint = ""
            if any(isinstance(v, tuple) for v in views):
                # MultiViewAugment([simclr_views(32)]) nests the tuple the recipe function returns.
                hint = (
                    "; recipe functions such as simclr_views(size) return one recipe per view:"
                    " pass their tuple itself"
                )
            raise ValueError(f"views must be all ViewRecipe or all NoiseRecipe, got {kinds}{hint}")
        if (mean is None) != (std is None):
            raise ValueError("mean and std must be given together")
        if mean is not None and std is not None:
            if not self.is_image:
                raise ValueError("mean/std normalize image views; NoiseRecipe views take none")
            if len(mean) != len(std):
                raise ValueError(f"mean and std differ in length: {len(mean)} vs {len(std)}")
            if any(s <= 0 for s in std):
                raise ValueError(f"std must be > 0 per channel, got {tuple(std)}")
            mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if seed is None:
            seed = int(torch.randint(0, _MAX_SEED, (1,)).item())
        elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
            raise ValueError(f"seed must be None or an int in [0, 2**63 - 1], got {seed!r}")
        self.views: tuple[ViewRecipe, ...] | tuple[NoiseRecipe, ...] = views  # type: ignore[assignment]
        self.num_views = len(views)
        # (recipe of the call, view indices) per batched call; noise views have no groups.
        self._groups = group_views(views) if self.is_image else ()  # type: ignore[arg-type]
        self.mean: tuple[float, ...] | None = mean
        self.std: tuple[float, ...] | None = std
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}
        # States loaded for devices not used yet in this process (e.g. a CUDA checkpoint read on a
        # CPU-only machine): applied when that device's generator is first needed.
        self._pending_states: dict[str, Tensor] = {}
        if device is not None:
            self.generator(device)

    def generator(self, device: torch.device | str) -> torch.Generator:
        """The generator that draws the parameters of batches on ``device``."""
        key = _device_key(device)
        if key not in self._generators:
            generator = torch.Generator(device=key)
            generator.manual_seed(self.seed)
            if key in self._pending_states:
                generator.set_state(self._pending_states.pop(key))
            self._generators[key] = generator
        return self._generators[key]

    def sample_params(self, batch: Tensor) -> list[ViewParams]:
        """Draw the per-sample parameters of every view for ``batch`` (image views only)."""
        if not self.is_image:
            raise ValueError(
                "sample_params is for image views; NoiseRecipe views have no parameters"
            )
        check_image_batch(batch)
        n, _, height, width = batch.shape
        generator = self.generator(batch.device)
        return [
            sample_view_params(recipe, n, height, width, generator, batch.device)  # type: ignore[arg-type]
            for recipe in self.views
        ]

    def __call__(self, batch: Tensor) -> list[Tensor]:
        """One float32 tensor per view, on the batch's device (see the class docstring for shapes)."""
        if not self.is_image:
            return self._noise_views(batch)
        params = self.sample_params(batch)
        views: list[Tensor] = [batch] * self.num_views  # placeholders, all replaced below
        for recipe, indices in self._groups:
            k = len(indices)
            source = batch if k == 1 else batch.repeat(k, 1, 1, 1)
            stacked = params[indices[0]] if k == 1 else ViewParams.cat([params[i] for i in indices])
            out = apply_view(source, recipe, stacked, self.mean, self.std)
            for index, view in zip(indices, out.chunk(k)):
                views[index] = view
        return views

    @property
    def view_groups(self) -> tuple[tuple[int, ...], ...]:
        """The view indices made by each batched call, e.g. ((0, 1), (2, ..., 9)) for DINO."""
        return tuple(indices for _, indices in self._groups)

    def _noise_views(self, batch: Tensor) -> list[Tensor]:
        if not isinstance(batch, Tensor):
            raise ValueError(f"batch must be a torch.Tensor, got {type(batch).__name__}")
        if batch.ndim < 2 or batch.shape[0] == 0 or batch.numel() == 0:
            raise ValueError(
                f"batch must be a non-empty (N, F) or (N, ...) tensor, got shape {tuple(batch.shape)}"
            )
        if batch.dtype not in FLOAT_DTYPES:
            raise ValueError(
                f"batch must be floating point for tabular/generic views, got dtype {batch.dtype}"
            )
        generator = self.generator(batch.device)
        source = batch.to(torch.float32)
        views = []
        for recipe in self.views:
            std = recipe.std  # type: ignore[union-attr]
            if std == 0.0:
                view = source.clone()
            else:
                noise = torch.randn(source.shape, generator=generator, device=batch.device)
                view = torch.add(source, noise, alpha=std)
            if recipe.drop_p > 0.0:  # type: ignore[union-attr]
                view = _input_dropout(view, recipe, generator)  # type: ignore[arg-type]
            views.append(view)
        return views

    def state_dict(self) -> dict[str, Any]:
        """{"seed": int, "generators": {device name: uint8 state tensor}}; loads with weights_only=True."""
        states = dict(self._pending_states)
        states.update({key: g.get_state() for key, g in self._generators.items()})
        return {"seed": self.seed, "generators": states}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the seed and the generator states saved by ``state_dict``."""
        if not isinstance(state, Mapping) or set(state) != {"seed", "generators"}:
            keys = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"state must be a dict with keys ['generators', 'seed'], got {keys}")
        seed, generators = state["seed"], state["generators"]
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
            raise ValueError(f"state['seed'] must be an int in [0, 2**63 - 1], got {seed!r}")
        if not isinstance(generators, Mapping) or not all(
            isinstance(v, Tensor) and v.dtype == torch.uint8 for v in generators.values()
        ):
            raise ValueError("state['generators'] must map device names to uint8 state tensors")
        self.seed = seed
        self._generators = {}
        self._pending_states = {_device_key(k): v.cpu() for k, v in generators.items()}

    def __repr__(self) -> str:
        views = ", ".join(repr(v) for v in self.views)
        return f"{type(self).__name__}(views=[{views}], mean={self.mean}, std={self.std}, seed={self.seed})"


def _input_dropout(view: Tensor, recipe: NoiseRecipe, generator: torch.Generator) -> Tensor:
    """`view` with each of its first recipe.drop_columns features (dim 1) zeroed with probability
    recipe.drop_p, per sample, unscaled (i-Mix's `x[:, :ch] * (rand > p)`)."""
    columns = view.shape[1] if recipe.drop_columns is None else recipe.drop_columns
    if columns > view.shape[1]:
        raise ValueError(
            f"drop_columns={columns} is more than the batch's {view.shape[1]} features (dim 1)"
        )
    part = view[:, :columns]
    keep = torch.rand(part.shape, generator=generator, device=view.device) > recipe.drop_p
    view[:, :columns] = part * keep
    return view
