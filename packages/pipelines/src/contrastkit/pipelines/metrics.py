"""The pretrain run's log: `metrics.csv` (always) and TensorBoard event files (when installed).

One CSV row per logged step with a fixed header; a resumed run first drops the rows written
after the checkpoint it resumes from, so the log reads as one uninterrupted run. TensorBoard is
an install extra (`contrastkit-pipelines[tensorboard]`): imported at the first row, and when it
is missing the logger says so once and writes the CSV only.
"""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from contrastkit.pipelines.atomic import atomic_write
from contrastkit.pipelines.run_files import METRICS_FILE, TENSORBOARD_DIR

TENSORBOARD_MISSING = (
    "note: tensorboard is not installed, so this run writes metrics.csv only "
    "(pip install 'contrastkit-pipelines[tensorboard]' for TensorBoard logs)"
)

METRIC_COLUMNS: tuple[str, ...] = (
    "step",
    "epoch",
    "loss",
    "lr",
    "knn_top1",
    "knn_top5",
    "online_top1",
    "online_test_top1",
    "nn_top1",
    "images_per_s",
    "elapsed_s",
)


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        # repr keeps every bit of a float, so two logs can be compared exactly.
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """The rows of a metrics.csv as dicts of strings (empty string = not measured)."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


class MetricsLogger:
    """Appends rows to `run_dir/metrics.csv` and mirrors them to TensorBoard.

    resume_step: None starts a new log (an old metrics.csv is replaced); a step keeps the rows
    with step <= resume_step and appends after them. Only the main process should create one.
    columns: the header (METRIC_COLUMNS for pretraining; joint training logs its own); a row may
    leave any column out (written empty). tensorboard: mirror the rows to `run_dir/tensorboard/`
    when tensorboard is installed; when it is not, TENSORBOARD_MISSING is printed to stderr once
    (at creation, or at the first row if the import fails there). tensorboard_prefix: the
    TensorBoard tag folder.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        resume_step: int | None = None,
        tensorboard: bool = True,
        columns: Sequence[str] = METRIC_COLUMNS,
        tensorboard_prefix: str = "pretrain",
    ) -> None:
        if "step" not in columns:
            raise ValueError(f"columns must include 'step', got {list(columns)}")
        self.columns = tuple(columns)
        self._prefix = tensorboard_prefix
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self.run_dir.mkdir(parents=True, exist_ok=True)
        kept: list[dict[str, str]] = []
        if resume_step is not None and self.path.is_file():
            kept = [r for r in read_metrics(self.path) if _row_step(r) <= resume_step]

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(kept)

        # The header and the kept rows replace the old file in one rename: a crash here keeps it.
        atomic_write(self.path, write)
        self._handle = open(self.path, "a", newline="")  # noqa: SIM115 - lives as long as the logger
        self._writer = csv.DictWriter(self._handle, fieldnames=self.columns)
        # The SummaryWriter is made at the first row: importing it costs seconds of start-up.
        self._resume_step = resume_step
        self._tensorboard: Any = None
        self._tensorboard_wanted = tensorboard
        if tensorboard and importlib.util.find_spec("tensorboard") is None:
            self._tensorboard_off()

    @property
    def tensorboard_enabled(self) -> bool:
        """TensorBoard events are (or, before the first row, will be) written."""
        return self._tensorboard_wanted

    def _tensorboard_off(self) -> None:
        self._tensorboard_wanted = False
        print(TENSORBOARD_MISSING, file=sys.stderr)

    def _tensorboard_writer(self) -> Any:
        if self._tensorboard is None and self._tensorboard_wanted:
            self._tensorboard = _open_tensorboard(self.run_dir / TENSORBOARD_DIR, self._resume_step)
            if self._tensorboard is None:
                self._tensorboard_off()
        return self._tensorboard

    def log(self, row: Mapping[str, Any]) -> None:
        """Write one row (keys from `columns`; `step` required) and flush it to disk."""
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(
                f"unknown metric column(s) {sorted(unknown)}; columns: {list(self.columns)}"
            )
        if "step" not in row:
            raise ValueError(f"a metrics row needs a 'step', got {dict(row)}")
        self._writer.writerow({k: _format(row.get(k)) for k in self.columns})
        self._handle.flush()
        board = self._tensorboard_writer()
        if board is not None:
            step = int(row["step"])
            for key, value in row.items():
                if key not in ("step",) and isinstance(value, int | float) and value is not None:
                    board.add_scalar(f"{self._prefix}/{key}", value, step)
            board.flush()

    def close(self) -> None:
        self._handle.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def _row_step(row: Mapping[str, str]) -> int:
    try:
        return int(row["step"])
    except (KeyError, TypeError, ValueError):
        return -1


def _open_tensorboard(log_dir: Path, resume_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    # purge_step drops events a crashed run wrote after the checkpoint we resume from.
    return SummaryWriter(str(log_dir), purge_step=None if resume_step is None else resume_step + 1)
