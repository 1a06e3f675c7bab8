"""Probe a pretrained backbone: linear probe or fine-tuning, kNN, t-SNE, neighbour grid, report.

    accelerate launch packages/pipelines/probe.py --checkpoint runs/x --data-dir DIR --output-dir DIR

A thin script over `contrastkit.pipelines.probe.main` (also installed as `contrastkit-probe`).
"""

import sys

from contrastkit.pipelines.probe import main

if __name__ == "__main__":
    sys.exit(main())
