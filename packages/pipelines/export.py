"""Export a pretrained backbone out of its run folder (also installed as `contrastkit-export`).

python packages/pipelines/export.py RUN_DIR [--checkpoint N] \
    --format safetensors|timm|torchscript --output-dir DIR

A thin script over `contrastkit.pipelines.export.cli.main`: safetensors (+ config.json and a
README.md model card), a timm state dict, or a TorchScript program.
"""

import sys

from contrastkit.pipelines.export.cli import main

if __name__ == "__main__":
    sys.exit(main())
