"""Saved weights back into a backbone: a state dict file (`.safetensors`, or `torch.save`) or an
export folder (`contrastkit-export`: model.safetensors beside the config.json that says how to
rebuild the backbone), compared key by key and shape by shape before anything is loaded.

safetensors is imported where a `.safetensors` file is read (timm, a dependency, brings it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

EXPORT_CONFIG_FILE = "config.json"
"""The file of an export folder that names the backbone (`backbone.name`, `backbone.kwargs`), its
input and normalization, and records the size and SHA-256 of its weights (`files`)."""

EXPORT_WEIGHTS_FILE = "model.safetensors"
"""The weights of a safetensors or timm export folder (config.json's `weights` names it)."""

WEIGHT_SOURCE_KWARGS: tuple[str, ...] = ("pretrained", "pretrained_path")
"""create_backbone arguments that say where the initial weights come from, not what the network
is: dropped when a backbone is rebuilt to receive weights saved from it."""

# A state dict saved from a compiled or DDP-wrapped module carries one of these on every key.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
_SHOWN = 5  # keys named per kind of mismatch in an error


def read_export_config(folder: str | Path) -> dict[str, Any] | None:
    """The config.json of an export folder as a dict, or None when the folder has none.

    Raises ValueError naming the file when it is not a JSON object.
    """
    path = Path(folder) / EXPORT_CONFIG_FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object, got {type(config).__name__}")
    return config


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_recorded(file: Path, record: object) -> None:
    """Raise ValueError when `file` differs from config.json's {"bytes", "sha256"} record of it."""
    if not isinstance(record, Mapping):
        return
    size = file.stat().st_size
    if "bytes" in record and size != record["bytes"]:
        raise ValueError(
            f"{str(file)!r} is damaged: it is {size} bytes, {EXPORT_CONFIG_FILE} says "
            f"{record['bytes']}; export the backbone again"
        )
    if "sha256" in record and _sha256(file) != record["sha256"]:
        raise ValueError(
            f"{str(file)!r} is damaged: it does not match its SHA-256 in {EXPORT_CONFIG_FILE}; "
            "export the backbone again"
        )


def resolve_weights_path(path: str | Path) -> Path:
    """The weights file `path` names: `path` itself when it is a file; for an export folder, the
    file its config.json names (`weights`, default model.safetensors). An export's weights file
    (named so by the config.json beside it) is checked against the size and SHA-256 recorded
    there.

    Raises ValueError, one line naming the path, when there is no such file or it is damaged.
    """
    path = Path(path).expanduser()
    expected = (
        "expected a state dict file (.safetensors or torch.save) or an export folder holding "
        f"{EXPORT_WEIGHTS_FILE} and {EXPORT_CONFIG_FILE} (contrastkit-export --format safetensors)"
    )
    if path.is_file():
        try:
            config = read_export_config(path.parent) or {}
        except ValueError:  # a config.json of something else beside a plain weights file
            config = {}
        if config.get("weights") == path.name:
            _check_recorded(path, (config.get("files") or {}).get(path.name))
        return path
    if not path.is_dir():
        raise ValueError(
            f"pretrained_path {str(path)!r} is not an existing file or folder; {expected}"
        )
    config = read_export_config(path) or {}
    name = config.get("weights", EXPORT_WEIGHTS_FILE)
    if not isinstance(name, str) or Path(name).name != name:
        raise ValueError(f"{str(path / EXPORT_CONFIG_FILE)!r} names no weights file: {name!r}")
    file = path / name
    if not file.is_file():
        kind = config.get("format")
        programs = ("torchscript", "torch_export")
        hint = f" (it is a {kind} export, not weights)" if kind in programs else ""
        raise ValueError(f"pretrained_path {str(path)!r} has no {name}{hint}; {expected}")
    _check_recorded(file, (config.get("files") or {}).get(name))
    return file


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The name -> tensor mapping stored in a `.safetensors` file (any other name is read with
    `torch.load(weights_only=True)`), on the CPU, without a `_orig_mod.` / `module.` prefix
    shared by every key.

    Raises ValueError, one line naming the file, when it cannot be read or holds no state dict.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # safetensors, pickle and zip readers each raise their own types
        detail = (str(error).strip().splitlines() or [""])[0][:160]
        raise ValueError(
            f"{str(path)!r} could not be read as a state dict: {type(error).__name__}: {detail}"
        ) from None
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise ValueError(
            f"{str(path)!r} holds a {type(state).__name__}, not a state dict (a mapping of "
            "parameter names to tensors)"
        )
    return unwrap_state_dict(dict(state))


def unwrap_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` (name -> tensor) without the prefix that a compiled (`_orig_mod.`) or DDP-wrapped
    (`module.`) module puts on every key; keys without a prefix shared by all stay as they are."""
    unwrapped = dict(state)
    for prefix in _WRAPPER_PREFIXES:
        if unwrapped and all(key.startswith(prefix) for key in unwrapped):
            unwrapped = {key[len(prefix) :]: value for key, value in unwrapped.items()}
    return unwrapped


def describe_mismatch(
    expected: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    ignore_missing: frozenset[str] = frozenset(),
) -> str:
    """One line naming the keys `given` lacks or has beyond `expected` and the shape mismatches
    (the first five of each); empty when the keys and shapes are exactly `expected`'s."""
    missing = sorted(set(expected) - set(given) - ignore_missing)
    unexpected = sorted(set(given) - set(expected))
    mismatched = [
        f"{key}: file {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in given.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if not (missing or unexpected or mismatched):
        return ""

    def shown(items: list[str]) -> str:
        return f"{items[:_SHOWN]}{'...' if len(items) > _SHOWN else ''}"

    return (
        f"missing keys {shown(missing)}, unexpected keys {shown(unexpected)}, "
        f"shape mismatches {shown(mismatched)}"
    )


def _export_origin(file: Path) -> str:
    """What an export's config.json says `file` holds ("; the export holds backbone 'myresnet'
    with kwargs {}"), or nothing when `file` is not an export's weights."""
    try:
        config = read_export_config(file.parent)
    except ValueError:
        return ""
    backbone = (config or {}).get("backbone")
    if not isinstance(backbone, dict) or (config or {}).get("weights") != file.name:
        return ""
    return (
        f"; the export holds backbone {backbone.get('name')!r} with kwargs {backbone.get('kwargs')}"
    )


def load_backbone_weights(module: nn.Module, path: str | Path, who: str) -> Path:
    """Load the weights `path` names (`resolve_weights_path`) into `module`, which must have
    exactly their keys and shapes. Returns the weights file.

    who: the backbone as the error names it, e.g. "backbone 'myresnet' with kwargs {}".
    Raises ValueError, one line naming the file and every kind of mismatch, before any weight
    changes.
    """
    file = resolve_weights_path(path)
    state = read_state_dict(file)
    problems = describe_mismatch(module.state_dict(), state)
    if problems:
        raise ValueError(
            f"pretrained_path {str(file)!r} does not fit {who}: {problems}{_export_origin(file)}"
        )
    module.load_state_dict(state)
    return file
