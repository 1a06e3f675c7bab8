"""Reproduction studies: a YAML file of cells (a shipped config + overrides), seeds and the
published numbers; `run_study` runs its grid and `write_report` writes REPORT.md beside them.

    python packages/pipelines/study.py run imix_covtype --profile cpu   (or `contrastkit-study`)

spec.py reads and checks a study file, runner.py runs it (estimate.py times it first,
cells_csv.py keeps its cells.csv), report.py (with report_plots.py) writes the report, cli.py
is the command line.
"""

from __future__ import annotations

from contrastkit.pipelines.study.cli import main
from contrastkit.pipelines.study.report import write_report
from contrastkit.pipelines.study.runner import run_study
from contrastkit.pipelines.study.spec import StudySpec, list_studies, load_study

__all__ = ["StudySpec", "list_studies", "load_study", "main", "run_study", "write_report"]
