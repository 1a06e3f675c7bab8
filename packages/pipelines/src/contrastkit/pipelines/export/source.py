"""What an export reads from a run folder: which checkpoint (`--checkpoint N`, else the newest that
verifies, as the probe picks it), its config and meta, and the evaluation results the run folder
holds for that checkpoint (probe results.csv files, a joint run's own, the kNN monitor).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from contrastkit.pipelines.checkpoint import (
    checkpoint_folders,
    checkpoint_step,
    is_checkpoint,
    newest_good_checkpoint,
)
from contrastkit.pipelines.checkpoint_integrity import skipped_note, verify_checkpoint
from contrastkit.pipelines.evaluation.pretrained import (
    PretrainedCheckpoint,
    is_export_folder,
    read_checkpoint_folder,
)
from contrastkit.pipelines.evaluation.results import read_results
from contrastkit.pipelines.metrics import read_metrics
from contrastkit.pipelines.run_files import (
    BACKBONE_FILE,
    CHECKPOINT_PREFIX,
    METRICS_FILE,
    RESULTS_FILE,
    checkpoint_dir_name,
)

RUN_EXPECTED = (
    f"expected a pretrain or joint run directory (train.output_dir, holding "
    f"{CHECKPOINT_PREFIX}<step>/ folders) or one of its checkpoint folders"
)


def _steps(run_dir: Path) -> str:
    steps = [checkpoint_step(folder) for folder in checkpoint_folders(run_dir)]
    return ", ".join(str(step) for step in steps) or "none"


def _named_checkpoint(path: Path, step: int) -> Path:
    """checkpoint-`step` of the run directory `path` (or `path` itself when it is that folder)."""
    if is_checkpoint(path):
        if checkpoint_step(path) != step:
            raise ValueError(
                f"RUN_DIR {str(path)!r} is the checkpoint folder {path.name}; --checkpoint {step} "
                "picks a checkpoint of a run directory: pass the run directory"
            )
        return path
    folder = path / checkpoint_dir_name(step)
    if not folder.is_dir():
        raise ValueError(
            f"--checkpoint {step}: {str(folder)!r} does not exist; the checkpoints of "
            f"{str(path)!r} are at steps {_steps(path)}"
        )
    return folder


def _newest_good(path: Path) -> Path:
    """The newest checkpoint of the run directory `path` that verifies (a note names each newer
    one skipped, and why)."""
    good, skipped = newest_good_checkpoint(path)
    if good is None and skipped:
        listed = "; ".join(f"{folder.name}: {', '.join(problems)}" for folder, problems in skipped)
        raise ValueError(
            f"no checkpoint of RUN_DIR {str(path)!r} passes its check ({listed}); export another run"
        )
    if good is None:
        raise FileNotFoundError(f"RUN_DIR {str(path)!r} holds no checkpoint; {RUN_EXPECTED}")
    for folder, problems in skipped:
        print(f"contrastkit-export: {skipped_note(folder, problems)}", file=sys.stderr, flush=True)
    return good


def resolve_export_checkpoint(run_dir: str | Path, step: int | None = None) -> Path:
    """The checkpoint folder to export: `run_dir`/checkpoint-`step`, or without `step` the newest
    checkpoint that verifies (a checkpoint folder given as `run_dir`: itself).

    Raises FileNotFoundError / ValueError, one line naming RUN_DIR or --checkpoint, for a path
    that is not a run directory or checkpoint folder, a missing or damaged checkpoint, or a
    checkpoint without backbone.pt.
    """
    path = Path(run_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"RUN_DIR {str(path)!r} does not exist; {RUN_EXPECTED}")
    if not path.is_dir():
        raise ValueError(f"RUN_DIR {str(path)!r} is a file; {RUN_EXPECTED}")
    if is_export_folder(path):
        raise ValueError(f"RUN_DIR {str(path)!r} is an export folder, not a run; {RUN_EXPECTED}")
    if checkpoint_step(path) is not None and not is_checkpoint(path):
        raise ValueError(f"RUN_DIR {str(path)!r} is an incomplete checkpoint (no meta.json)")
    if step is not None:
        folder = _named_checkpoint(path, step)
    elif is_checkpoint(path):
        folder = path
    else:
        folder = _newest_good(path)
    problems = verify_checkpoint(folder)
    if problems:
        raise ValueError(
            f"checkpoint folder {str(folder)!r} is damaged: {'; '.join(problems)}; export another "
            f"checkpoint (steps {_steps(folder.parent)})"
        )
    if not (folder / BACKBONE_FILE).is_file():
        present = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        raise ValueError(
            f"checkpoint folder {str(folder)!r} holds no {BACKBONE_FILE} (it holds {present}): "
            "only pretrain and joint checkpoints have a backbone to export"
        )
    return folder


def load_export_checkpoint(run_dir: str | Path, step: int | None = None) -> PretrainedCheckpoint:
    """`resolve_export_checkpoint`, then its config.yaml and meta.json read back."""
    return read_checkpoint_folder(resolve_export_checkpoint(run_dir, step))


# ---------------------------------------------------------------- what the run folder measured


def _matches(row: dict[str, str], checkpoint: PretrainedCheckpoint) -> bool:
    # Probe rows name the step they probed; a joint run's row is "as of its latest evaluation"
    # and has no step, so its pretraining epochs must match instead.
    if row.get("step"):
        return row["step"] == str(checkpoint.step)
    return bool(row.get("epochs")) and row["epochs"] == str(checkpoint.epochs)


def probe_results(checkpoint: PretrainedCheckpoint) -> list[dict[str, str]]:
    """The results.csv rows of this checkpoint found in its run directory: the run's own
    results.csv (joint runs) and those one folder down (probe-<dataset>/, --output-dir inside
    the run), each with a `file` entry (the results.csv, relative to the run directory)."""
    run_dir = checkpoint.run_dir
    files = [run_dir / RESULTS_FILE, *sorted(run_dir.glob(f"*/{RESULTS_FILE}"))]
    rows = []
    for file in files:
        if not file.is_file():
            continue
        try:
            found = read_results(file)
        except (OSError, ValueError, UnicodeDecodeError):  # an unreadable file is not a result
            continue
        relative = str(file.relative_to(run_dir))
        rows += [{"file": relative, **row} for row in found if _matches(row, checkpoint)]
    return rows


def monitor_knn(checkpoint: PretrainedCheckpoint) -> dict[str, Any] | None:
    """The kNN monitor's top-1 / top-5 at the checkpoint's step (metrics.csv), or None."""
    path = checkpoint.run_dir / METRICS_FILE
    if not path.is_file():
        return None
    try:
        rows = read_metrics(path)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    for row in rows:
        if row.get("step") == str(checkpoint.step) and row.get("knn_top1"):
            return {"knn_top1": float(row["knn_top1"]), "knn_top5": row.get("knn_top5") or None}
    return None
