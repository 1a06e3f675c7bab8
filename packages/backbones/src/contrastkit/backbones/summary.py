"""model_summary: a Keras-style table of layers, output shapes and parameter counts.

Built with forward hooks on one dummy forward pass; no dependency beyond torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from contrastkit.backbones._checks import check_positive_int

OutputShape = tuple[int, ...] | list[tuple[int, ...]] | None


class SummaryRow(NamedTuple):
    """One executed layer: dotted module name, output shape (batch first), own parameter count.

    `output_shape` is a tuple for a tensor output, a list of tuples for a tuple/list of
    tensors, None for anything else. `num_params` counts the parameters the module holds
    directly (not its children's), once: a module or parameter used again shows 0.
    """

    name: str
    output_shape: OutputShape
    num_params: int


@dataclass
class ModelSummary:
    """Result of `model_summary`: `rows` for code, `str()` / `to_text()` for people.

    Attributes:
        model_name: class name of the model.
        input_size: the dummy input's shape, batch first.
        rows: executed layers in call order.
        total_params, trainable_params: unique parameters of the whole model
            (equal to sum(p.numel()) over `model.parameters()`).
    """

    model_name: str
    input_size: tuple[int, ...]
    rows: list[SummaryRow]
    total_params: int
    trainable_params: int
    _layer_types: list[str] = field(default_factory=list, repr=False)

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    def to_text(self) -> str:
        """The table as aligned plain text."""
        names = [
            f"{row.name} ({kind})" for row, kind in zip(self.rows, self._layer_types, strict=True)
        ]
        shapes = [_format_shape(row.output_shape) for row in self.rows]
        counts = [f"{row.num_params:,}" for row in self.rows]
        header = ("Layer (type)", "Output Shape", "Param #")
        w_name = max([len(header[0]), *map(len, names)])
        w_shape = max([len(header[1]), *map(len, shapes)])
        w_count = max([len(header[2]), *map(len, counts)])
        width = w_name + w_shape + w_count + 4
        lines = [
            f'Model: "{self.model_name}"   input: {_format_shape(self.input_size)}',
            "=" * width,
            f"{header[0]:<{w_name}}  {header[1]:<{w_shape}}  {header[2]:>{w_count}}",
            "=" * width,
        ]
        for name, shape, count in zip(names, shapes, counts, strict=True):
            lines.append(f"{name:<{w_name}}  {shape:<{w_shape}}  {count:>{w_count}}")
        lines.append("=" * width)
        lines.append(f"Total params: {self.total_params:,}")
        lines.append(f"Trainable params: {self.trainable_params:,}")
        lines.append(f"Non-trainable params: {self.non_trainable_params:,}")
        unused = self.total_params - sum(row.num_params for row in self.rows)
        if unused:
            lines.append(f"Params in layers not run by forward: {unused:,}")
        lines.append("=" * width)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _format_shape(shape: OutputShape) -> str:
    if shape is None:
        return "-"
    if isinstance(shape, list):
        return "[" + ", ".join(_format_shape(s) for s in shape) + "]"
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _output_shape(output: Any) -> OutputShape:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, tuple | list) and all(isinstance(o, torch.Tensor) for o in output):
        return [tuple(o.shape) for o in output]
    return None


def model_summary(
    model: nn.Module,
    input_size: Sequence[int],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> ModelSummary:
    """Run one forward pass of zeros through `model` and tabulate every layer that ran.

    A row is recorded for each call of a module that has no children or holds parameters
    directly (so the rows' parameter counts add up to the model's total when every
    parameter is used in forward). The model runs in eval mode under `torch.no_grad()` (so
    BatchNorm statistics are not touched and a batch of 1 works) and is put back in its
    previous train/eval mode afterwards.

    Args:
        model: any nn.Module taking one tensor.
        input_size: full input shape including the batch dimension, e.g. (1, 3, 32, 32).
        dtype: dtype of the dummy input; defaults to the first parameter's (else float32).
        device: device of the dummy input; defaults to the first parameter's (else CPU).

    Returns:
        a ModelSummary: `.rows` (list of SummaryRow(name, output_shape, num_params)) and
        `str(summary)` / `summary.to_text()`.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(input_size, str) or not isinstance(input_size, Sequence) or not input_size:
        raise ValueError(
            f"input_size must be a non-empty sequence of positive ints (batch first), "
            f"got {input_size!r}"
        )
    for i, dim in enumerate(input_size):
        check_positive_int(f"input_size[{i}]", dim)

    first = next(model.parameters(), None)
    if dtype is None:
        dtype = first.dtype if first is not None else torch.float32
    if device is None:
        device = first.device if first is not None else torch.device("cpu")

    rows: list[SummaryRow] = []
    layer_types: list[str] = []
    seen_params: set[int] = set()

    def make_hook(name: str):
        def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
            own = 0
            for p in module.parameters(recurse=False):
                if id(p) not in seen_params:
                    seen_params.add(id(p))
                    own += p.numel()
            rows.append(SummaryRow(name or "(root)", _output_shape(output), own))
            layer_types.append(type(module).__name__)

        return hook

    handles = [
        module.register_forward_hook(make_hook(name))
        for name, module in model.named_modules()
        if next(module.children(), None) is None
        or next(module.parameters(recurse=False), None) is not None
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(tuple(input_size), dtype=dtype, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    unique = {id(p): p for p in model.parameters()}.values()
    return ModelSummary(
        model_name=type(model).__name__,
        input_size=tuple(input_size),
        rows=rows,
        total_params=sum(p.numel() for p in unique),
        trainable_params=sum(p.numel() for p in unique if p.requires_grad),
        _layer_types=layer_types,
    )
