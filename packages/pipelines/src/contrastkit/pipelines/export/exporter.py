"""`export_backbone`: a run's pretrained backbone written as an export folder, read top to bottom:
which checkpoint, what the format needs (refusals first), the weights or program, config.json and
the README.md model card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from contrastkit.backbones import EXPORT_CONFIG_FILE, read_export_config
from contrastkit.pipelines.atomic import write_text_atomic
from contrastkit.pipelines.evaluation.pretrained import PretrainedCheckpoint, build_backbone
from contrastkit.pipelines.export import check_format
from contrastkit.pipelines.export.config_json import example_input, export_config, input_spec
from contrastkit.pipelines.export.formats import (
    write_safetensors,
    write_torch_export,
    write_torchscript,
)
from contrastkit.pipelines.export.model_card import model_card
from contrastkit.pipelines.export.source import load_export_checkpoint, monitor_knn, probe_results
from contrastkit.pipelines.export.timm_mapping import (
    TimmTarget,
    timm_hub_config,
    timm_state_dict,
    timm_target,
)
from contrastkit.pipelines.preflight import PathProblem, check_writable_dir

MODEL_CARD_FILE = "README.md"


@dataclass
class ExportResult:
    """What `export_backbone` wrote: the folder, its files and the checkpoint they came from."""

    output_dir: Path
    export_format: str
    files: list[str]
    checkpoint: Path
    step: int | None


def check_output_dir(path: str | Path, export_format: str) -> Path:
    """The output folder, created when missing: it must be writable and empty, or hold an earlier
    export of the same format (whose files are replaced); PathProblem naming it otherwise."""
    folder = check_writable_dir(path, "--output-dir")
    present = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    if not present:
        return folder
    try:
        earlier = read_export_config(folder) or {}
    except ValueError:
        earlier = {}
    if earlier.get("format") != export_format or "contrastkit_export" not in earlier:
        raise PathProblem(
            f"--output-dir {str(folder)!r} is not empty (it holds {present[:5]}) and is no "
            f"{export_format} export to replace; choose a new or empty folder"
        )
    return folder


def export_backbone(
    run_dir: str | Path,
    export_format: str,
    output_dir: str | Path,
    *,
    checkpoint_step: int | None = None,
) -> ExportResult:
    """Write the backbone of a pretrain or joint run into `output_dir` as `export_format`.

    safetensors: model.safetensors (the backbone's state dict, its own keys), config.json,
    README.md. timm: model.safetensors with timm's keys (`timm:` backbones only), config.json (also
    timm's own fields), README.md. torchscript: model.torchscript.pt (traced, taking normalized
    inputs), config.json, README.md. torch_export: model.pt2 (a torch.export program with a
    dynamic batch size, taking normalized inputs), config.json, README.md.

    checkpoint_step: export run_dir/checkpoint-<step>; default the newest checkpoint that verifies.
    Raises FileNotFoundError / ValueError (one line) for a bad run folder, checkpoint, format or
    output folder, before anything is written; a format that cannot hold the backbone (timm for a
    CIFAR ResNet) is refused before the output folder is created.
    """
    export_format = check_format(export_format)
    checkpoint = load_export_checkpoint(run_dir, checkpoint_step)
    target = timm_target(checkpoint) if export_format == "timm" else None
    created = not Path(output_dir).expanduser().exists()
    folder = check_output_dir(output_dir, export_format)
    try:
        files = _write_export(checkpoint, export_format, folder, target)
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()  # a refusal (no faithful program) leaves no empty folder
        raise
    return ExportResult(folder, export_format, files, checkpoint.path, checkpoint.step)


def _write_export(
    checkpoint: PretrainedCheckpoint, export_format: str, folder: Path, target: TimmTarget | None
) -> list[str]:
    """The weights (or program), then README.md, then config.json (last: it records the others);
    the names of the files written."""
    backbone = build_backbone(checkpoint).eval()
    spec = input_spec(checkpoint, backbone)
    metadata = {"contrastkit_backbone": checkpoint.backbone_name}
    weights, extra, program = None, {}, None
    if export_format == "safetensors":
        weights = write_safetensors(backbone.state_dict(), folder, metadata)
    elif export_format == "timm":
        assert target is not None
        weights = write_safetensors(timm_state_dict(backbone, target), folder, metadata)
        extra = timm_hub_config(backbone, target, spec)
    else:
        info = export_config(checkpoint, backbone, export_format, folder, [])
        info = {key: info[key] for key in ("backbone", "input", "output", "source")}
        example, check = example_input(spec, 2), example_input(spec, 3, seed=1)
        write = write_torchscript if export_format == "torchscript" else write_torch_export
        program = write(backbone, folder, example, check, info)
        extra = {export_format: program}
    written = weights or program
    assert written is not None  # every format writes weights or a program
    files = [written]
    config = export_config(
        checkpoint, backbone, export_format, folder, files, weights=weights, extra=extra
    )
    card = model_card(config, folder.resolve(), backbone, *_measured(checkpoint))
    write_text_atomic(folder / MODEL_CARD_FILE, card)
    write_text_atomic(folder / EXPORT_CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    return [*files, EXPORT_CONFIG_FILE, MODEL_CARD_FILE]


def _measured(checkpoint: PretrainedCheckpoint) -> tuple[list[dict[str, str]], dict | None]:
    return probe_results(checkpoint), monitor_knn(checkpoint)
