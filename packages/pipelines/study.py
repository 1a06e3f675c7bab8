"""Reproduction studies from the command line (also installed as `contrastkit-study`).

python packages/pipelines/study.py list
python packages/pipelines/study.py run STUDY [--profile cpu|gpu] [--cells a,b] [--seeds 0,1,2]
    [--output-dir DIR] [--no-estimate]
python packages/pipelines/study.py report DIR

A thin script over `contrastkit.pipelines.study.cli.main`.
"""

import sys

from contrastkit.pipelines.study.cli import main

if __name__ == "__main__":
    sys.exit(main())
