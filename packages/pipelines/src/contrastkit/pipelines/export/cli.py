"""The `contrastkit-export` command (also `python packages/pipelines/export.py`):

    contrastkit-export RUN_DIR [--checkpoint N] --format safetensors|timm|torchscript|torch_export
        --output-dir DIR

The options are checked before torch is imported. Exit status: 0 written; 2 bad input (the run
folder, the checkpoint, the format, the output folder, a backbone the format cannot hold), said
in one line `contrastkit-export: error: ...`, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from contrastkit.pipelines.cli_errors import OneLineParser, one_line_reason
from contrastkit.pipelines.export import EXPORT_FORMATS, check_format

PROG = "contrastkit-export"
EXIT_OK, EXIT_BAD_INPUT = 0, 2

EPILOG = """\
formats:
  safetensors  model.safetensors (the backbone's state dict), config.json (how to rebuild it:
               create_backbone name and arguments, input size, normalization), README.md (a
               model card: method, data, epochs, probe results, how to load it)
  timm         model.safetensors that timm.create_model(name, pretrained=True,
               pretrained_cfg_overlay=dict(file=...), num_classes=0) loads, for timm:
               backbones (the CIFAR ResNets and MyResNet have no timm model: refused)
  torchscript  model.torchscript.pt, a traced program taking normalized (N, C, H, W) floats
  torch_export model.pt2, a torch.export program (any batch size) taking the same; loaded by
               torch.export.load(path).module() with torch alone

exit status: 0 written; 2 bad input (one line says what)."""


def _step(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a checkpoint step (an int >= 0), got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The `contrastkit-export` parser."""
    parser = OneLineParser(
        prog=PROG,
        description="Export the pretrained backbone of a pretrain or joint run folder as "
        "safetensors (+ config.json + README.md), a timm state dict, or TorchScript.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a pretrain or joint run folder, or one of its checkpoint folders")  # fmt: skip
    parser.add_argument("--checkpoint", type=_step, metavar="N",
                        help="export checkpoint-N (default: the newest checkpoint that verifies)")  # fmt: skip
    parser.add_argument("--format", required=True, dest="export_format",
                        metavar="|".join(EXPORT_FORMATS), help="what to write (below)")  # fmt: skip
    parser.add_argument("--output-dir", required=True,
                        help="the export folder: new, empty, or an earlier export of this format")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (`contrastkit-export`, `packages/pipelines/export.py`); returns the
    exit status: 0 written, 2 bad input (one line says what to fix)."""
    args = build_parser().parse_args(argv)
    try:
        check_format(args.export_format)
        # Here, once the options are known good: this imports torch (and timm for timm backbones).
        from contrastkit.pipelines.export.exporter import export_backbone

        result = export_backbone(
            args.run_dir, args.export_format, args.output_dir, checkpoint_step=args.checkpoint
        )
    except (ValueError, OSError) as error:  # FileNotFoundError too; an OSError names its path
        print(f"{PROG}: error: {one_line_reason(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"{PROG}: wrote {result.export_format} export of {result.checkpoint} (step {result.step}) "
        f"to {result.output_dir}: {', '.join(result.files)}",
        file=sys.stderr,
    )
    return EXIT_OK
