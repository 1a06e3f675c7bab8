"""The files an export can hold: the backbone's state dict as safetensors (its own keys, or
timm's), a TorchScript program of it (traced, else scripted) or a torch.export program (with a
dynamic batch size), each program checked against the module it came from. Each is written
atomically into the export folder.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from contrastkit.backbones import EXPORT_WEIGHTS_FILE
from contrastkit.pipelines.atomic import atomic_write

TORCHSCRIPT_FILE = "model.torchscript.pt"
"""The TorchScript program of a torchscript export."""

TORCHSCRIPT_INFO = "contrastkit.json"
"""The extra file inside a program's archive (TorchScript or torch.export): backbone, input and
output of config.json."""

TORCH_EXPORT_FILE = "model.pt2"
"""The torch.export program of a torch_export export (`torch.export.save`)."""

# A traced program must give the module's features to this (absolute, float32) on a new batch.
TRACE_TOLERANCE = 1e-6


def plain_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor as its own contiguous CPU copy: safetensors refuses tensors that share memory
    or are strided (conv weights of a channels_last run are)."""
    return {
        key: value.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        for key, value in state.items()
    }


def write_safetensors(
    state: dict[str, torch.Tensor], folder: Path, metadata: dict[str, str]
) -> str:
    """`state` as `folder`/model.safetensors with string `metadata` in its header; the file name."""
    from safetensors.torch import save_file

    tensors = plain_tensors(state)
    header = {"format": "pt", **metadata}  # "pt": how Hugging Face libraries tag torch weights
    atomic_write(folder / EXPORT_WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), header))
    return EXPORT_WEIGHTS_FILE


def _largest_difference(program: Any, backbone: nn.Module, check: torch.Tensor) -> float:
    with torch.no_grad():
        return float((program(check) - backbone(check)).abs().max())


def _compile(
    backbone: nn.Module, example: torch.Tensor, check: torch.Tensor
) -> tuple[Any, list[str]]:
    """A TorchScript program reproducing `backbone` on `check` (a batch of another size than
    `example`): traced, else scripted; (program or None, why each attempt failed)."""
    failures = []
    attempts = (("torch.jit.trace", lambda: torch.jit.trace(backbone, example)),
                ("torch.jit.script", lambda: torch.jit.script(backbone)))  # fmt: skip
    for name, attempt in attempts:
        # torch 2.14 marks torch.jit deprecated, and tracing warns that the backbones' input
        # checks become constants; the comparison below is the test of faithfulness.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                program = attempt()
            except Exception as error:  # trace and script raise many types for unsupported code
                failures.append(f"{name}: {type(error).__name__}: {str(error).splitlines()[0]}")
                continue
            difference = _largest_difference(program, backbone, check)
        if difference <= TRACE_TOLERANCE:
            return program, failures
        failures.append(f"{name}: features differ by {difference:.3g} on a batch of {len(check)}")
    return None, failures


def write_torchscript(
    backbone: nn.Module, folder: Path, example: torch.Tensor, check: torch.Tensor, info: dict
) -> str:
    """A TorchScript program of `backbone` (eval mode, CPU, contiguous weights) as
    `folder`/model.torchscript.pt, with `info` (JSON) inside it as contrastkit.json; the file name.

    example: a normalized input batch to trace with; check: one of another batch size, on which
    the program must give the module's features to TRACE_TOLERANCE (ValueError naming the
    backbone and both attempts otherwise).
    """
    backbone = backbone.eval().to("cpu", memory_format=torch.contiguous_format)
    program, failures = _compile(backbone, example, check)
    if program is None:
        raise ValueError(
            f"--format torchscript: no TorchScript program reproduces {type(backbone).__name__} "
            f"({'; '.join(failures)}); use --format safetensors"
        )
    extra = {TORCHSCRIPT_INFO: json.dumps(info, indent=2)}
    atomic_write(folder / TORCHSCRIPT_FILE, lambda tmp: program.save(str(tmp), _extra_files=extra))
    return TORCHSCRIPT_FILE


def write_torch_export(
    backbone: nn.Module, folder: Path, example: torch.Tensor, check: torch.Tensor, info: dict
) -> str:
    """A torch.export program of `backbone` (eval mode, CPU, contiguous weights) with a dynamic
    batch size as `folder`/model.pt2, with `info` (JSON) inside it as contrastkit.json; the file
    name. Loaded with `torch.export.load(path).module()`: torch alone, no Python source.

    example: a normalized input batch to export with; check: one of another batch size, on which
    the program must give the module's features to TRACE_TOLERANCE (ValueError naming the
    backbone and the reason otherwise).
    """
    from torch.export import Dim, export, save

    backbone = backbone.eval().to("cpu", memory_format=torch.contiguous_format)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = export(backbone, (example,), dynamic_shapes=({0: Dim("batch")},))
        difference = _largest_difference(program.module(), backbone, check)
    except Exception as error:  # export raises many types for code it cannot capture
        reason = f"torch.export: {type(error).__name__}: {str(error).splitlines()[0]}"
    else:
        if difference <= TRACE_TOLERANCE:
            extra = {TORCHSCRIPT_INFO: json.dumps(info, indent=2)}
            atomic_write(
                folder / TORCH_EXPORT_FILE, lambda tmp: save(program, str(tmp), extra_files=extra)
            )
            return TORCH_EXPORT_FILE
        reason = f"torch.export: features differ by {difference:.3g} on a batch of {len(check)}"
    raise ValueError(
        f"--format torch_export: no torch.export program reproduces {type(backbone).__name__} "
        f"({reason}); use --format safetensors"
    )
