"""Run-directory checkpoints: `checkpoint-{step}/` folders written atomically, checked against the
sizes and SHA-256 sums their meta.json records, pruned to the last k (a folder that fails its check
is moved aside, never deleted), restored after a save that a crash interrupted, found again for
`--resume`, and checked against the config of the run that wants to resume.

A checkpoint folder holds (names from `run_files`; see the package README):
    config.yaml          the resolved config of the run
    backbone.pt          torch.save(student_backbone.state_dict())
    training_state.pt    model (student, heads, teacher, queue, online classifier), optimizer,
                         LR scheduler, grad scaler
    rank_state-{r}.pt    per process: python/numpy/torch/CUDA RNG, augment and i-Mix generators,
                         the running sums of the current metrics row and epoch
    meta.json            written last: {"step", "epoch", "batch_in_epoch", "method", "backbone",
                         "world_size", ..., "files": {name: {"bytes": N, "sha256": hex}}} with an
                         entry for every other file of the folder (none before pipelines 0.2)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from contrastkit.pipelines.atomic import save_torch_atomic
from contrastkit.pipelines.checkpoint_integrity import (
    OLD_SUFFIX,
    move_aside,
    no_good_checkpoint_message,
    recover_interrupted_saves,
    skipped_note,
    verify_checkpoint,
    write_meta,
)
from contrastkit.pipelines.checkpoint_integrity import (
    read_meta as read_meta,  # re-exported: callers read meta.json through this module
)
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


# ---------------------------------------------------------------- finding checkpoint folders


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


def checkpoint_folders(run_dir: str | Path) -> list[Path]:
    """Every folder of `run_dir` named checkpoint-<step>, complete or not, lowest step first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    return sorted(found, key=lambda p: checkpoint_step(p) or 0)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The complete checkpoint folders of a run directory (holding meta.json), oldest first."""
    return [p for p in checkpoint_folders(run_dir) if is_checkpoint(p)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step in `run_dir` (verified or not), or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def newest_good_checkpoint(run_dir: str | Path) -> tuple[Path | None, list[tuple[Path, list[str]]]]:
    """The newest checkpoint folder of `run_dir` that passes `verify_checkpoint` (None if none
    does), and every newer checkpoint-<step> folder that does not, newest first, with its problems.
    """
    skipped: list[tuple[Path, list[str]]] = []
    for folder in reversed(checkpoint_folders(run_dir)):
        problems = verify_checkpoint(folder)
        if not problems:
            return folder, skipped
        skipped.append((folder, problems))
    return None, skipped


def resolve_checkpoint(path: str | Path, *, on_skip: Callable[[str], None] | None = None) -> Path:
    """A run directory -> its newest checkpoint that verifies; a checkpoint folder -> itself
    (unverified: call `verify_checkpoint` on it).

    on_skip: called with `skipped_note(...)` for each newer checkpoint of a run directory that
    fails its check. Raises FileNotFoundError when `path` does not exist, is an incomplete
    checkpoint folder or a directory without checkpoints, and ValueError when it is a file (a
    checkpoint is a folder) or a run directory whose every checkpoint fails its check.
    """
    path = Path(path).expanduser()
    expected = (
        f"expected a run directory holding {CHECKPOINT_PREFIX}<step>/ folders or one such folder"
    )
    if not path.exists():
        raise FileNotFoundError(f"checkpoint path {str(path)!r} does not exist; {expected}")
    if not path.is_dir():
        raise ValueError(f"checkpoint path {str(path)!r} is a file; {expected}")
    if is_checkpoint(path):
        return path
    if checkpoint_step(path) is not None:
        raise FileNotFoundError(
            f"{str(path)!r} is named like a checkpoint but has no {META_FILE}: it is incomplete"
        )
    good, skipped = newest_good_checkpoint(path)
    if good is None and any(is_checkpoint(folder) for folder, _ in skipped):
        advice = "pass one of its checkpoint folders that is intact, or another run directory"
        raise ValueError(no_good_checkpoint_message(path, skipped, advice))
    if good is None:
        raise FileNotFoundError(
            f"no checkpoint in {str(path)!r}: expected {CHECKPOINT_PREFIX}<step>/ folders holding "
            f"{META_FILE} (or pass one checkpoint folder)"
        )
    for folder, problems in skipped:
        if on_skip is not None:
            on_skip(skipped_note(folder, problems))
    return good


# ---------------------------------------------------------------- writing and pruning


def prune_checkpoints(
    run_dir: str | Path, keep_last: int, *, upto_step: int | None = None
) -> list[Path]:
    """Remove all but the newest `keep_last` checkpoints; returns the removed folders.

    A folder that fails `verify_checkpoint` is moved aside (`move_aside`) instead of deleted.
    upto_step: consider only checkpoints of this step or lower (those of a run resumed from an
    earlier checkpoint stay until the run reaches their step and saves it again).
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    found = [
        p
        for p in list_checkpoints(run_dir)
        if upto_step is None or (checkpoint_step(p) or 0) <= upto_step
    ]
    removed = found[:-keep_last]
    for path in removed:
        problems = verify_checkpoint(path)
        if problems:
            move_aside(path, problems)
        else:
            shutil.rmtree(path)
    return removed


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """After `recover_interrupted_saves` (main process only: it may also replace a damaged
    checkpoint with a complete copy of the same step), delete the `.tmp-checkpoint-*` folders
    left: saves a crash cut short, and copies a finished save replaced. Returns the deleted
    folders."""
    run_dir = Path(run_dir)
    recover_interrupted_saves(run_dir, replace_damaged=True)
    if not run_dir.is_dir():
        return []
    stale = []
    for path in sorted(run_dir.iterdir()):
        if not (path.is_dir() and path.name.startswith(TMP_CHECKPOINT_PREFIX)):
            continue
        digits = path.name[len(TMP_CHECKPOINT_PREFIX) :].removesuffix(OLD_SUFFIX)
        if (
            path.name.endswith(OLD_SUFFIX)
            and not (run_dir / checkpoint_dir_name(int(digits))).is_dir()
        ):
            continue  # a replaced copy is deleted only once its replacement is in place
        shutil.rmtree(path)
        stale.append(path)
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
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write `run_dir/checkpoint-{step}/` atomically, from every process of a run.

    The main process creates `run_dir/.tmp-checkpoint-{step}/`; every process writes its
    `rank_state-{rank}.pt` there; the main process calls `write_shared(tmp)` for the shared
    files (written with `atomic.save_torch_atomic` / `write_text_atomic` and fsync=True), then
    writes meta.json last with `write_meta` (when `meta` is given; else `write_shared` writes
    it, without a manifest), and renames the folder into place, then prunes to `keep_last`.
    An older folder of the same step is swapped out and deleted, or moved aside when it fails
    its check. A crash at any point leaves the previous checkpoints untouched and the new one
    either complete or absent (`recover_interrupted_saves`). Every process must call this (it
    contains barriers); returns the final folder.
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
        if meta is not None:
            write_meta(tmp, meta)  # after every process's rank file: the barrier above
        _swap_in(tmp, final, step)
        if keep_last is not None:
            prune_checkpoints(run_dir, keep_last, upto_step=step)
    barrier()
    return final


def _swap_in(tmp: Path, final: Path, step: int) -> None:
    """Rename the complete `tmp` to `final`; an existing `final` (the same step saved twice, e.g.
    a signal right at an epoch end) is swapped out through `-old` and deleted, or moved aside
    when it fails its check."""
    if not final.exists():
        os.replace(tmp, final)
        return
    problems = verify_checkpoint(final)
    if problems:
        move_aside(final, problems)
        os.replace(tmp, final)
        return
    old = final.with_name(f"{TMP_CHECKPOINT_PREFIX}{step}{OLD_SUFFIX}")
    if old.exists():
        shutil.rmtree(old)  # left by an earlier swap that finished (`final` exists)
    os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old)


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
