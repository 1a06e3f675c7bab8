"""Export a pretrained backbone out of its run folder, in the formats people load: safetensors
(+ config.json + a README.md model card), timm's state dict, a TorchScript program, or a
torch.export program.

`export_backbone(run_dir, export_format, output_dir)` does it; `contrastkit-export` is its command
line (`cli.main`). Importing this package loads no torch: `export_backbone` and `ExportResult`
are imported from `exporter` on first use, so the command line checks its options first.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contrastkit.pipelines.export.exporter import ExportResult, export_backbone

EXPORT_FORMATS: tuple[str, ...] = ("safetensors", "timm", "torchscript", "torch_export")
"""What `--format` takes: the backbone's weights as safetensors, as timm's state dict, a
TorchScript program, or a torch.export program (an ExportedProgram in a .pt2 file)."""
PROGRAM_FORMATS: tuple[str, ...] = ("torchscript", "torch_export")
"""The formats that hold a program (loaded without the backbone's code), not weights."""


def check_format(export_format: str) -> str:
    """`export_format` if it is one of EXPORT_FORMATS, else ValueError naming the closest one."""
    if export_format in EXPORT_FORMATS:
        return export_format
    close = difflib.get_close_matches(str(export_format).lower(), EXPORT_FORMATS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"--format must be one of {', '.join(EXPORT_FORMATS)}, got {export_format!r}{hint}"
    )


_LAZY = {"export_backbone": "exporter", "ExportResult": "exporter"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["EXPORT_FORMATS", "PROGRAM_FORMATS", "ExportResult", "check_format", "export_backbone"]
