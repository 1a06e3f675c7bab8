"""Run-directory checkpoints: `checkpoint-{step}/` folders written atomically, pruned to the last k,
found again for `--resume`, and checked against the config of the run that wants to resume.

A checkpoint folder holds (names from `run_files`; see the package README):
    config.yaml          the resolved config of the run
    backbone.pt          torch.save(student_backbone.state_dict())
    meta.json            {"step", "epoch", "batch_in_epoch", "method", "backbone", "world_size", ...}
    training_state.pt    model (student, heads, teacher, queue, online classifier), optimizer,
                         LR scheduler, grad scaler
    rank_state-{r}.pt    per process: python/numpy/torch/CUDA RNG, augment and i-Mix generators,
                         the running sums of the current metrics row and epoch
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from contrastkit.pipelines.atomic import save_torch_atomic
from contrastkit.pipelines.run_files import (
    CHECKPOINT_PREFIX,
    META_FILE,
    TMP_CHECKPOINT_PREFIX,
    checkpoint_dir_name,
    rank_state_file,
)

# Fields that may differ between a checkpoint's config and the run resuming from it: they change
# where things are, how often the loop reports, or how long it runs, not what the state means.
RESUMABLE_CHANGES: frozenset[str] = frozenset(
    {
        "train.epochs",
        "train.log_every",
        "train.checkpoint_every",
        "train.keep_last",
        "train.knn_every",
        "train.knn_k",
        "train.knn_temperature",
        "train.output_dir",
        "train.progress_bar",
        "data.data_dir",
        "data.download",
        "data.num_workers",
        "data.knn_train_subset",
        "data.knn_test_subset",
        "model.compile",
        "joint.eval_every",
    }
)


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a `checkpoint-{step}` folder name, or None for any other name."""
    name = Path(path).name
    if not name.startswith(CHECKPOINT_PREFIX):
        return None
    digits = name[len(CHECKPOINT_PREFIX) :]
    return int(digits) if digits.isdigit() else None


def is_checkpoint(path: str | Path) -> bool:
    """A complete checkpoint folder: named checkpoint-<step> and holding meta.json."""
    path = Path(path)
    return checkpoint_step(path) is not None and (path / META_FILE).is_file()


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoint folders of a run directory, oldest (lowest step) first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and is_checkpoint(p)]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in `run_dir`, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory -> its latest checkpoint folder; a checkpoint folder -> itself.

    Raises FileNotFoundError when `path` does not exist or is a directory without checkpoints,
    and ValueError when it is a file (a checkpoint is a folder).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint path {str(path)!r} does not exist; expected a run directory holding "
            f"{CHECKPOINT_PREFIX}<step>/ folders or one such folder"
        )
    if not path.is_dir():
        raise ValueError(
            f"checkpoint path {str(path)!r} is a file; expected a run directory holding "
            f"{CHECKPOINT_PREFIX}<step>/ folders or one such folder"
        )
    if is_checkpoint(path):
        return path
    if checkpoint_step(path) is not None:
        raise FileNotFoundError(
            f"{str(path)!r} is named like a checkpoint but has no {META_FILE}: it is incomplete"
        )
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError(
            f"no checkpoint in {str(path)!r}: expected {CHECKPOINT_PREFIX}<step>/ folders holding "
            f"{META_FILE} (or pass one checkpoint folder)"
        )
    return latest


def read_meta(checkpoint: str | Path) -> dict[str, Any]:
    """The meta.json of a checkpoint folder."""
    path = Path(checkpoint) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(path)!r} does not exist: not a checkpoint folder") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(meta, dict) or not {"step", "epoch"} <= set(meta):
        raise ValueError(f"{str(path)!r} must be a JSON object with at least 'step' and 'epoch'")
    return meta


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints; returns the deleted folders."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    found = list_checkpoints(run_dir)
    removed = found[:-keep_last]
    for path in removed:
        shutil.rmtree(path)
    return removed


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete `.tmp-checkpoint-*` folders that a crash during a save left behind."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    stale = [
        p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith(TMP_CHECKPOINT_PREFIX)
    ]
    for path in stale:
        shutil.rmtree(path)
    return stale


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    write_shared: Callable[[Path], None],
    rank_state: Mapping[str, Any],
    rank: int = 0,
    is_main: bool = True,
    barrier: Callable[[], None] = lambda: None,
    keep_last: int | None = None,
) -> Path:
    """Write `run_dir/checkpoint-{step}/` atomically, from every process of a run.

    The main process creates `run_dir/.tmp-checkpoint-{step}/`; every process writes its
    `rank_state-{rank}.pt` there; the main process calls `write_shared(tmp)` for the shared
    files (meta.json last; written with `atomic.save_torch_atomic` / `write_text_atomic` and
    fsync=True) and renames the folder into place (replacing an older folder of the
    same step), then prunes to `keep_last`. A crash at any point leaves either the previous
    checkpoints untouched or the new one complete. Every process must call this (it contains
    barriers); returns the final folder.
    """
    run_dir = Path(run_dir)
    tmp = run_dir / f"{TMP_CHECKPOINT_PREFIX}{step}"
    final = run_dir / checkpoint_dir_name(step)
    if is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    barrier()
    # fsync: a checkpoint that claims to be complete must survive a power cut.
    save_torch_atomic(dict(rank_state), tmp / rank_state_file(rank), fsync=True)
    barrier()
    if is_main:
        write_shared(tmp)
        if final.exists():
            # Same step saved twice (e.g. a signal right at an epoch end): swap, then delete the old.
            old = run_dir / f"{TMP_CHECKPOINT_PREFIX}{step}-old"
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
        if keep_last is not None:
            prune_checkpoints(run_dir, keep_last)
    barrier()
    return final


def _flatten(config: Mapping[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in config.items():
        if isinstance(values, Mapping):
            for name, value in values.items():
                flat[f"{section}.{name}"] = value
        else:
            flat[str(section)] = values
    return flat


def resume_mismatches(
    checkpoint_config: Mapping[str, Any], config: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """(field, checkpoint value, this run's value) for every field that must match but differs."""
    saved, current = _flatten(checkpoint_config), _flatten(config)
    mismatches = []
    for key in sorted(set(saved) | set(current)):
        if key in RESUMABLE_CHANGES:
            continue
        missing = object()
        a, b = saved.get(key, missing), current.get(key, missing)
        if a != b:
            mismatches.append(
                (key, "(absent)" if a is missing else a, "(absent)" if b is missing else b)
            )
    return mismatches


def check_resume_compatible(
    checkpoint: Path,
    checkpoint_config: Mapping[str, Any],
    config: Mapping[str, Any],
    *,
    checkpoint_world_size: int,
    world_size: int,
) -> None:
    """Raise ValueError naming every field that makes `checkpoint` unusable for this run.

    Everything but RESUMABLE_CHANGES must be equal (method, backbone, dims, batch size,
    dataset, optimizer, seed, ...), and so must the number of processes (it sets the global
    batch and the per-process random streams).
    """
    problems = [
        f"  {key}: checkpoint {a!r}, this run {b!r}"
        for key, a, b in resume_mismatches(checkpoint_config, config)
    ]
    if checkpoint_world_size != world_size:
        problems.append(
            f"  number of processes: checkpoint {checkpoint_world_size}, this run {world_size}"
        )
    if problems:
        raise ValueError(
            f"cannot resume from {str(checkpoint)!r}: its config is incompatible with this run's:\n"
            + "\n".join(problems)
            + "\n(only "
            + ", ".join(sorted(RESUMABLE_CHANGES))
            + " may change on resume; nothing was written)"
        )
