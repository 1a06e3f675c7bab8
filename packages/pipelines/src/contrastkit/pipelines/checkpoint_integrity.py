"""What a checkpoint folder records of itself and the checks against that record: meta.json with
the size and SHA-256 of every other file, `verify_checkpoint`, loading a checkpoint file with a
one-line error when it is damaged, moving a folder that fails its check aside (it is never
deleted), and putting back a checkpoint that a crash during its save left under a temporary name.
The folder mechanics (writing, finding, pruning) are `checkpoint`'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from contrastkit.pipelines.atomic import write_text_atomic
from contrastkit.pipelines.run_files import (
    CHECKPOINT_PREFIX,
    META_FILE,
    TMP_CHECKPOINT_PREFIX,
    checkpoint_dir_name,
)

FILES_KEY = "files"  # meta.json's record of the folder's other files: {name: {"bytes", "sha256"}}
CORRUPT_SUFFIX = ".corrupt"  # checkpoint-130.corrupt: a folder that failed its check, moved aside
OLD_SUFFIX = "-old"  # .tmp-checkpoint-130-old: the folder a same-step re-save replaces


def _note(text: str) -> None:
    """One line on stderr about a checkpoint folder that was restored or moved aside."""
    print(text, file=sys.stderr, flush=True)


def read_meta(checkpoint: str | Path) -> dict[str, Any]:
    """The meta.json of a checkpoint folder."""
    path = Path(checkpoint) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(path)!r} does not exist: not a checkpoint folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(meta, dict) or not {"step", "epoch"} <= set(meta):
        raise ValueError(f"{str(path)!r} must be a JSON object with at least 'step' and 'epoch'")
    return meta


# ---------------------------------------------------------------- what a checkpoint records of itself


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_manifest(folder: str | Path) -> dict[str, dict[str, Any]]:
    """{name: {"bytes": size, "sha256": hex}} of every file in `folder` but meta.json and hidden
    ones (atomic-write temporaries), sorted by name."""
    folder = Path(folder)
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.name != META_FILE and p.name[0] != "."
    )
    return {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in files}


def write_meta(folder: str | Path, meta: Mapping[str, Any]) -> Path:
    """Write `folder`/meta.json: `meta` plus "files", the manifest of every other file already in
    the folder; atomically and flushed to disk, as the last file of a checkpoint."""
    record = {**meta, FILES_KEY: file_manifest(folder)}
    return write_text_atomic(
        Path(folder) / META_FILE, json.dumps(record, indent=2) + "\n", fsync=True
    )


def verify_checkpoint(path: str | Path, names: Iterable[str] | None = None) -> list[str]:
    """What is wrong with the checkpoint folder `path`, one short phrase per problem naming the
    file ("training_state.pt is 1234 bytes, meta.json says 5678"); empty when it is intact.

    Every file meta.json lists must exist with the recorded size and SHA-256 (sizes are compared
    first, so a truncated file costs no hashing). Files the list does not hold (the probe's
    feature caches) are not checked. A meta.json without "files" (written before pipelines 0.2)
    is accepted unverified. names: check only these files (when the list holds them).
    """
    folder = Path(path)
    if not folder.is_dir():
        return [f"{folder.name} is not a folder"]
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        return [f"{META_FILE} is missing (the save did not finish)"]
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return [f"{META_FILE} cannot be read: {str(error).splitlines()[0]}"]
    if not isinstance(meta, dict) or not {"step", "epoch"} <= set(meta):
        return [f"{META_FILE} is not a checkpoint record (no 'step' and 'epoch')"]
    files = meta.get(FILES_KEY)
    if files is None:
        return []
    if not isinstance(files, dict):
        return [f"{META_FILE}'s {FILES_KEY!r} is not a mapping of file names"]
    wanted = set(names) if names is not None else None
    entries = [(n, e) for n, e in sorted(files.items()) if wanted is None or n in wanted]
    problems, to_hash = [], []
    for name, entry in entries:
        if Path(name).name != name or not isinstance(entry, dict):
            problems.append(f"{META_FILE} has a malformed entry {name!r}")
            continue
        try:
            size = (folder / name).stat().st_size if (folder / name).is_file() else None
        except OSError:  # gone meanwhile
            size = None
        if size is None:
            problems.append(f"{name} is missing ({META_FILE} lists it)")
        elif size != entry.get("bytes"):
            problems.append(f"{name} is {size} bytes, {META_FILE} says {entry.get('bytes')}")
        else:
            to_hash.append((name, entry))
    for name, entry in to_hash:
        try:
            if file_sha256(folder / name) != entry.get("sha256"):
                problems.append(
                    f"{name} does not match its SHA-256 in {META_FILE} (damaged or changed)"
                )
        except OSError as error:
            problems.append(f"{name} cannot be read: {error.strerror or error}")
    return problems


def load_torch_file(path: str | Path, map_location: Any = "cpu") -> Any:
    """`torch.load(path, weights_only=True)` of a checkpoint file; a file that is missing, empty,
    truncated or damaged is a FileNotFoundError / ValueError naming it (one line), never torch's
    RuntimeError, EOFError, UnpicklingError or OSError."""
    import torch  # here: this module is read by commands that must start without torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(path)!r} is missing")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as error:  # torch raises many types for a damaged file
        size = path.stat().st_size
        detail = (str(error).strip().splitlines() or [""])[0].split(". ")[0][:160]
        reason = (
            "it is empty (0 bytes)" if size == 0 else f"it is truncated or damaged ({size} bytes"
        )
        if size:
            reason += f"; {type(error).__name__}: {detail})" if detail else ")"
        raise ValueError(f"checkpoint file {str(path)!r} cannot be read: {reason}") from None


def skipped_note(folder: Path, problems: list[str]) -> str:
    """ "checkpoint-130 skipped: training_state.pt is 1234 bytes, meta.json says 5678"."""
    return f"{folder.name} skipped: " + "; ".join(problems)


def no_good_checkpoint_message(
    run_dir: str | Path, failed: list[tuple[Path, list[str]]], advice: str
) -> str:
    """The error for a run directory whose every checkpoint fails its check: each one named with
    its problems, and `advice` (what to do) as the last line."""
    lines = [
        f"no checkpoint in {str(run_dir)!r} passes its check (they are left in place):",
        *(f"  {folder.name}: {'; '.join(problems)}" for folder, problems in failed),
        advice,
    ]
    return "\n".join(lines)


def move_aside(folder: Path, problems: list[str]) -> Path:
    """Rename a checkpoint folder that failed its check (`problems`) to `checkpoint-<step>.corrupt`
    (`.corrupt-2`, ... when taken), where no checkpoint lookup sees it, and say so on stderr; it
    is never deleted. Returns the new path."""
    step = folder.name.removeprefix(TMP_CHECKPOINT_PREFIX).removeprefix(CHECKPOINT_PREFIX)
    base = checkpoint_dir_name(int(step.removesuffix(OLD_SUFFIX)))
    for index in range(1, 1000):
        target = folder.with_name(base + CORRUPT_SUFFIX + (f"-{index}" if index > 1 else ""))
        if not target.exists():
            os.rename(folder, target)
            _note(
                f"moved {folder.name} aside to {target.name} ({'; '.join(problems)}); it is kept "
                "for inspection, delete it when done"
            )
            return target
    raise ValueError(f"cannot move {str(folder)!r} aside: too many {CORRUPT_SUFFIX} folders")


def _rename_if_free(source: Path, target: Path) -> bool:
    """Rename `source` onto the free name `target`; False when another process got there first
    (every process of a launch may run the recovery at once)."""
    if target.exists():
        return False
    try:
        os.rename(source, target)
    except OSError:  # source already renamed, or target created meanwhile (ENOTEMPTY, EEXIST)
        return False
    return True


def _complete_and_good(folder: Path, need_manifest: bool) -> bool:
    try:
        if not (folder / META_FILE).is_file() or verify_checkpoint(folder):
            return False
        return not need_manifest or FILES_KEY in read_meta(folder)
    except (OSError, ValueError):  # renamed meanwhile by another process, or unreadable
        return False


def recover_interrupted_saves(run_dir: str | Path, *, replace_damaged: bool = False) -> list[Path]:
    """Put back a checkpoint that a crash during its save left under a temporary name.

    A same-step re-save renames `checkpoint-N` to `.tmp-checkpoint-N-old`, then the new
    `.tmp-checkpoint-N` to `checkpoint-N`; a crash between the two leaves no `checkpoint-N`.
    Then the new copy is restored when it is complete and verifies (only a meta.json with
    "files" proves that), else the old one; an old one that fails its check is moved aside.
    Every process of a launch may run this at once: each restoration happens (and is said on
    stderr) once, and every process then sees the same folders. replace_damaged (one process
    only, after the resume decision): a complete new copy also replaces a `checkpoint-N` that
    fails its check (a crash before the swap). Returns the restored folders.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    steps = sorted(
        {
            int(digits)
            for p in run_dir.iterdir()
            if p.is_dir() and p.name.startswith(TMP_CHECKPOINT_PREFIX)
            for digits in [p.name[len(TMP_CHECKPOINT_PREFIX) :].removesuffix(OLD_SUFFIX)]
            if digits.isdigit()
        }
    )
    restored = []
    for step in steps:
        final = run_dir / checkpoint_dir_name(step)
        new = run_dir / f"{TMP_CHECKPOINT_PREFIX}{step}"
        old = run_dir / f"{TMP_CHECKPOINT_PREFIX}{step}{OLD_SUFFIX}"
        if final.is_dir():
            if replace_damaged and _complete_and_good(new, need_manifest=True):
                problems = verify_checkpoint(final)
                if problems:
                    move_aside(final, problems)
                    os.rename(new, final)
                    _note(f"restored {final.name} from {new.name}, a complete save of it")
                    restored.append(final)
            continue
        for candidate, need_manifest in ((new, True), (old, False)):
            if _complete_and_good(candidate, need_manifest):
                if _rename_if_free(candidate, final):
                    _note(
                        f"restored {final.name} from {candidate.name} (a crash interrupted "
                        "its save)"
                    )
                    restored.append(final)
                break
        else:
            if (old / META_FILE).is_file():
                with contextlib.suppress(FileNotFoundError):  # another process moved it first
                    move_aside(old, verify_checkpoint(old))
    return restored
