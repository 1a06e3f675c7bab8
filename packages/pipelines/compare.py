"""Overlay several runs' validation curves on one figure and tabulate their results.csv rows.

    python packages/pipelines/compare.py RUN_OR_CSV [RUN_OR_CSV ...] --output compare.png

A thin script over `contrastkit.pipelines.compare.main` (also installed as `contrastkit-compare`).
"""

import sys

from contrastkit.pipelines.compare import main

if __name__ == "__main__":
    sys.exit(main())
