"""Checkpoint folders: finding them, writing them atomically, pruning, their contents, the resume
rules (incompatible configs refused without writing anything, allowed changes accepted), and the
record each one keeps of its files: damaged ones found, skipped, moved aside, never deleted; the
crash window of a same-step re-save restored."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from pretrain_helpers import flip_byte, tiny_tabular_config, toy_tabular, truncate_file

from contrastkit.backbones import create_backbone
from contrastkit.pipelines.checkpoint import (
    check_resume_compatible,
    checkpoint_folders,
    list_checkpoints,
    prune_checkpoints,
    read_meta,
    remove_stale_temporaries,
    resolve_checkpoint,
    resume_mismatches,
    save_checkpoint,
    verify_checkpoint,
)
from contrastkit.pipelines.checkpoint_integrity import load_torch_file
from contrastkit.pipelines.config import config_from_dict, config_to_dict, load_config
from contrastkit.pipelines.metrics import read_metrics
from contrastkit.pipelines.pretrain import run_pretrain
from contrastkit.pipelines.training.resume import find_resume_checkpoint
from contrastkit.pipelines.training.task import PretrainResult


def _fake_checkpoint(run_dir: Path, step: int) -> Path:
    return save_checkpoint(
        run_dir,
        step,
        write_shared=lambda folder: (folder / "meta.json").write_text(
            json.dumps({"step": step, "epoch": 0})
        ),
        rank_state={"x": torch.tensor(step)},
    )


def test_resolve_checkpoint_cases(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step in (9, 10, 2):
        _fake_checkpoint(run, step)
    assert resolve_checkpoint(run).name == "checkpoint-10"  # numeric, not lexical, order
    assert resolve_checkpoint(run / "checkpoint-2") == run / "checkpoint-2"
    assert [p.name for p in list_checkpoints(run)] == [
        "checkpoint-2",
        "checkpoint-9",
        "checkpoint-10",
    ]
    with pytest.raises(FileNotFoundError, match="does not exist; expected a run directory"):
        resolve_checkpoint(tmp_path / "missing")
    (tmp_path / "file.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file; expected a run directory"):
        resolve_checkpoint(tmp_path / "file.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in .*empty.*checkpoint-<step>/"):
        resolve_checkpoint(tmp_path / "empty")
    (run / "checkpoint-11").mkdir()  # incomplete: no meta.json
    assert resolve_checkpoint(run).name == "checkpoint-10"
    with pytest.raises(FileNotFoundError, match=r"has no meta\.json: it is incomplete"):
        resolve_checkpoint(run / "checkpoint-11")


def test_crash_during_save_keeps_previous_checkpoints(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _fake_checkpoint(run, 5)

    def crash(folder: Path) -> None:
        (folder / "backbone.pt").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(run, 6, write_shared=crash, rank_state={})
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-5"]
    assert resolve_checkpoint(run).name == "checkpoint-5"
    assert [p.name for p in remove_stale_temporaries(run)] == [".tmp-checkpoint-6"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-5"]


def test_same_step_is_replaced_and_keep_last_prunes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step in range(1, 5):
        _fake_checkpoint(run, step)
    final = save_checkpoint(
        run,
        4,
        write_shared=lambda f: (f / "meta.json").write_text('{"step": 4, "epoch": 1}'),
        rank_state={},
        keep_last=2,
    )
    assert read_meta(final)["epoch"] == 1
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-3", "checkpoint-4"]
    assert prune_checkpoints(run, 1) == [run / "checkpoint-3"]
    with pytest.raises(ValueError, match="keep_last must be >= 1"):
        prune_checkpoints(run, 0)


def test_read_meta_rejects_bad_files(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint-1"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        read_meta(folder)
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_meta(folder)
    (folder / "meta.json").write_text('{"step": 1}')
    with pytest.raises(ValueError, match="at least 'step' and 'epoch'"):
        read_meta(folder)


def test_mismatch_report_names_fields() -> None:
    a = config_to_dict(config_from_dict({"method": {"name": "moco"}}))
    b = config_to_dict(
        config_from_dict({"method": {"name": "moco"}, "train": {"batch_size": 64, "epochs": 400}})
    )
    assert resume_mismatches(a, b) == [("train.batch_size", 512, 64)]  # epochs may change
    with pytest.raises(ValueError) as error:
        check_resume_compatible(Path("ck"), a, b, checkpoint_world_size=2, world_size=1)
    message = str(error.value)
    assert "train.batch_size: checkpoint 512, this run 64" in message
    assert "number of processes: checkpoint 2, this run 1" in message
    assert "nothing was written" in message


def _run(tmp_path: Path, **sections: dict) -> PretrainResult:
    raw = tiny_tabular_config(tmp_path / "run", **sections)
    return run_pretrain(config_from_dict(raw), train_data=toy_tabular(128))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_run_checkpoint_contents(tmp_path: Path) -> None:
    result = _run(tmp_path, method={"name": "byol"}, train={"checkpoint_every": 3, "keep_last": 2})
    run = result.run_dir
    assert [p.name for p in list_checkpoints(run)] == [
        "checkpoint-6",
        "checkpoint-8",
    ]  # 4 steps/epoch
    checkpoint = resolve_checkpoint(run)
    meta = read_meta(checkpoint)
    assert meta["step"] == 8 and meta["epoch"] == 2 and meta["batch_in_epoch"] == 0
    assert meta["method"] == "byol" and meta["backbone"] == "mlp" and meta["world_size"] == 1
    config = load_config(checkpoint / "config.yaml")
    assert config.model.backbone_kwargs == {"width": 32, "num_layers": 2, "in_features": 6}
    assert load_config(run / "config.yaml") == config
    # The contract: backbone.pt loads into create_backbone(model.backbone, **model.backbone_kwargs).
    backbone = create_backbone(config.model.backbone, **config.model.backbone_kwargs)
    backbone.load_state_dict(torch.load(checkpoint / "backbone.pt", weights_only=True))
    state = torch.load(checkpoint / "training_state.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler"} <= set(state)
    assert any(k.startswith("method.teacher.") for k in state["model"])
    assert state["scheduler"]["last_epoch"] == 8
    rank = torch.load(checkpoint / "rank_state-0.pt", weights_only=True)
    assert {"python", "numpy", "torch", "augment", "mix_generator"} <= set(rank)
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, state["model"][f"method.encoder.backbone.{key}"])


INCOMPATIBLE = [
    ({"method": {"name": "npair"}}, "method.name"),
    ({"model": {"projection_dim": 8}}, "model.projection_dim"),
    ({"model": {"backbone_kwargs": {"width": 16, "num_layers": 2}}}, "model.backbone_kwargs"),
    ({"train": {"batch_size": 16}}, "train.batch_size"),
    ({"train": {"online_linear": True}}, "train.online_linear"),
    ({"optimizer": {"name": "adamw"}}, "optimizer.name"),
    ({"data": {"train_subset": 64}}, "data.train_subset"),
]


def test_incompatible_resume_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    result = _run(tmp_path, method={"name": "moco"})
    before = _snapshot(result.run_dir)
    for override, field in INCOMPATIBLE:
        changed = tiny_tabular_config(tmp_path / "run", method={"name": "moco"})
        for section, values in override.items():
            changed[section].update(values)
        pattern = rf"(?s)cannot resume from .*checkpoint-8.*\n  {re.escape(field)}: checkpoint"
        with pytest.raises(ValueError, match=pattern):
            run_pretrain(config_from_dict(changed), resume="latest", train_data=toy_tabular(128))
        assert _snapshot(result.run_dir) == before, field


def test_resume_on_changed_data_is_refused(tmp_path: Path) -> None:
    result = _run(tmp_path)
    before = _snapshot(result.run_dir)
    raw = tiny_tabular_config(tmp_path / "run")
    with pytest.raises(ValueError, match="4 steps per epoch, this run's data gives 2"):
        run_pretrain(config_from_dict(raw), resume="latest", train_data=toy_tabular(64))
    assert _snapshot(result.run_dir) == before


def test_new_run_into_a_run_dir_is_refused(tmp_path: Path) -> None:
    result = _run(tmp_path)
    before = _snapshot(result.run_dir)
    raw = tiny_tabular_config(tmp_path / "run")
    with pytest.raises(ValueError, match=r"already holds checkpoints .*--resume latest"):
        run_pretrain(config_from_dict(raw), train_data=toy_tabular(128))
    assert _snapshot(result.run_dir) == before


def test_resume_latest_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    raw = tiny_tabular_config(tmp_path / "run")
    result = run_pretrain(config_from_dict(raw), resume="latest", train_data=toy_tabular(128))
    assert result.step == 8


def test_training_can_be_extended_on_resume(tmp_path: Path) -> None:
    first = _run(tmp_path, train={"epochs": 1, "warmup_epochs": 0})
    assert first.step == 4
    longer = tiny_tabular_config(tmp_path / "run", train={"epochs": 3, "warmup_epochs": 0})
    second = run_pretrain(
        config_from_dict(longer), resume=first.run_dir, train_data=toy_tabular(128)
    )
    assert second.step == 12
    assert [int(r["step"]) for r in read_metrics(second.run_dir / "metrics.csv")] == list(
        range(1, 13)
    )


# ---------------------------------------------------------------- checkpoints verify themselves


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checkpoint_with_manifest(run_dir: Path, step: int, epoch: int = 0, **files: bytes) -> Path:
    """A checkpoint folder as save_training_checkpoint writes it: shared files, one rank file,
    meta.json last with the manifest."""

    def write_shared(folder: Path) -> None:
        for name, data in {"backbone.pt": b"weights", **files}.items():
            (folder / name).write_bytes(data)

    return save_checkpoint(
        run_dir,
        step,
        write_shared=write_shared,
        rank_state={"x": torch.tensor(step)},
        meta={"step": step, "epoch": epoch},
    )


def test_meta_records_size_and_sha256_of_every_other_file(tmp_path: Path) -> None:
    result = _run(tmp_path, method={"name": "moco"})
    checkpoint = resolve_checkpoint(result.run_dir)
    files = read_meta(checkpoint)["files"]
    on_disk = sorted(p.name for p in checkpoint.iterdir() if p.name != "meta.json")
    assert sorted(files) == on_disk
    assert {"config.yaml", "backbone.pt", "training_state.pt", "rank_state-0.pt"} <= set(files)
    for name, entry in files.items():
        path = checkpoint / name
        assert entry == {"bytes": len(path.read_bytes()), "sha256": _sha256(path)}, name
    assert verify_checkpoint(checkpoint) == []


def test_verify_names_each_damaged_file(tmp_path: Path) -> None:
    folder = _checkpoint_with_manifest(tmp_path / "run", 7, **{"training_state.pt": b"s" * 5678})
    size = {p.name: p.stat().st_size for p in folder.iterdir()}
    truncate_file(folder / "training_state.pt", 1234)
    truncate_file(folder / "rank_state-0.pt", 0)
    flip_byte(folder / "backbone.pt", 3)
    (folder / "features-cifar10-train.pt").write_bytes(b"a probe cache, added later")
    assert verify_checkpoint(folder) == [
        f"rank_state-0.pt is 0 bytes, meta.json says {size['rank_state-0.pt']}",
        "training_state.pt is 1234 bytes, meta.json says 5678",
        "backbone.pt does not match its SHA-256 in meta.json (damaged or changed)",
    ]
    assert verify_checkpoint(folder, names=["training_state.pt"]) == [
        "training_state.pt is 1234 bytes, meta.json says 5678"
    ]
    (folder / "backbone.pt").unlink()
    assert "backbone.pt is missing (meta.json lists it)" in verify_checkpoint(folder)
    (folder / "meta.json").unlink()
    assert verify_checkpoint(folder) == ["meta.json is missing (the save did not finish)"]


def test_checkpoints_written_before_0_2_are_accepted_unverified(tmp_path: Path) -> None:
    folder = _fake_checkpoint(tmp_path / "run", 3)  # meta.json without "files"
    (folder / "rank_state-0.pt").write_bytes(b"")
    assert verify_checkpoint(folder) == []
    assert resolve_checkpoint(tmp_path / "run") == folder


@pytest.mark.parametrize("size", [0, 1, 10, 1000, 65536])
def test_loading_a_damaged_file_is_one_line_naming_it(tmp_path: Path, size: int) -> None:
    path = tmp_path / "checkpoint-3" / "training_state.pt"
    path.parent.mkdir()
    torch.save({"w": torch.arange(40000.0)}, path)
    assert torch.equal(load_torch_file(path)["w"], torch.arange(40000.0))
    truncate_file(path, size)  # torch raises EOFError, UnpicklingError, RuntimeError or OSError
    with pytest.raises(ValueError) as error:
        load_torch_file(path)
    message = str(error.value)
    assert message.startswith(f"checkpoint file {str(path)!r} cannot be read: it is ")
    assert ("empty (0 bytes)" if size == 0 else f"truncated or damaged ({size} bytes") in message
    assert "\n" not in message
    path.unlink()
    with pytest.raises(FileNotFoundError, match=r"training_state\.pt' is missing"):
        load_torch_file(path)


# ---------------------------------------------------------------- --resume latest picks a good one


def test_resume_latest_skips_damaged_checkpoints_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    for step in (5, 10, 15):
        _checkpoint_with_manifest(run, step, **{"training_state.pt": b"s" * 5678})
    truncate_file(run / "checkpoint-15" / "training_state.pt", 1234)
    truncate_file(run / "checkpoint-10" / "rank_state-0.pt", 0)
    assert find_resume_checkpoint("latest", run) == run / "checkpoint-5"
    err = capsys.readouterr().err
    assert "--resume latest: checkpoint-15 skipped: training_state.pt is 1234 bytes, " in err
    assert "meta.json says 5678" in err
    assert "--resume latest: checkpoint-10 skipped: rank_state-0.pt is 0 bytes" in err
    assert "using checkpoint-5, the newest checkpoint that passes its check" in err
    # Nothing was deleted or moved: the damaged folders stay where they were.
    assert [p.name for p in list_checkpoints(run)] == [
        "checkpoint-5",
        "checkpoint-10",
        "checkpoint-15",
    ]
    # A run directory given as --resume PATH (or to the probe) resolves the same way.
    assert resolve_checkpoint(run) == run / "checkpoint-5"


def test_no_good_checkpoint_is_an_error_listing_them(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step in (5, 10):
        _checkpoint_with_manifest(run, step)
        flip_byte(run / f"checkpoint-{step}" / "backbone.pt", 0)
    before = _snapshot(run)
    with pytest.raises(ValueError) as error:
        find_resume_checkpoint("latest", run)
    lines = str(error.value).splitlines()
    assert (
        lines[0]
        == f"--resume latest: no checkpoint in {str(run)!r} passes its check (they are left in place):"
    )
    assert lines[1].startswith("  checkpoint-10: backbone.pt does not match its SHA-256")
    assert lines[2].startswith("  checkpoint-5: backbone.pt does not match its SHA-256")
    assert "move them out of" in lines[3] and "nothing was written" in lines[3]
    with pytest.raises(ValueError, match=r"already holds checkpoints \(latest checkpoint-10\)"):
        find_resume_checkpoint(None, run)  # a new run over them is refused too
    with pytest.raises(ValueError, match=r"no checkpoint in .* passes its check"):
        resolve_checkpoint(run)
    assert _snapshot(run) == before


def test_resume_path_to_a_damaged_checkpoint_names_the_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    folder = _checkpoint_with_manifest(run, 5, **{"training_state.pt": b"s" * 5678})
    truncate_file(folder / "training_state.pt", 1234)
    with pytest.raises(ValueError) as error:
        find_resume_checkpoint(folder, tmp_path / "other")
    assert str(error.value).startswith(
        f"cannot resume from {str(folder)!r}: training_state.pt is 1234 bytes, meta.json says 5678;"
    )


# ---------------------------------------------------------------- never deleted: moved aside


def test_pruning_moves_a_damaged_folder_aside(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step in (1, 2, 3):
        _checkpoint_with_manifest(run, step)
    truncate_file(run / "checkpoint-1" / "backbone.pt", 2)
    damaged = (run / "checkpoint-1" / "backbone.pt").read_bytes()
    _checkpoint_with_manifest(run, 4)
    assert prune_checkpoints(run, 2) == [run / "checkpoint-1", run / "checkpoint-2"]
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint-1.corrupt",
        "checkpoint-3",
        "checkpoint-4",
    ]
    assert (run / "checkpoint-1.corrupt" / "backbone.pt").read_bytes() == damaged


def test_a_resumed_run_never_prunes_what_it_just_wrote(tmp_path: Path) -> None:
    """keep_last=1 after resuming from checkpoint-120 past a damaged checkpoint-130: the new
    checkpoint-125 stays, checkpoint-130 waits until step 130 is saved again, then is moved
    aside, not deleted."""
    run = tmp_path / "run"
    for step in (120, 130):
        _checkpoint_with_manifest(run, step, epoch=1)
    truncate_file(run / "checkpoint-130" / "backbone.pt", 3)
    _checkpoint_with_manifest(run, 125)
    prune_checkpoints(run, 1, upto_step=125)
    assert [p.name for p in checkpoint_folders(run)] == ["checkpoint-125", "checkpoint-130"]
    save_checkpoint(
        run,
        130,
        write_shared=lambda f: (f / "backbone.pt").write_bytes(b"new weights"),
        rank_state={},
        meta={"step": 130, "epoch": 2},
        keep_last=1,
    )
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-130", "checkpoint-130.corrupt"]
    assert read_meta(run / "checkpoint-130")["epoch"] == 2
    assert verify_checkpoint(run / "checkpoint-130") == []
    assert (run / "checkpoint-130.corrupt" / "backbone.pt").read_bytes() == b"wei"
    # Saving the same (good) step again replaces it and leaves nothing beside it.
    save_checkpoint(
        run,
        130,
        write_shared=lambda f: (f / "backbone.pt").write_bytes(b"newer weights"),
        rank_state={},
        meta={"step": 130, "epoch": 3},
    )
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-130", "checkpoint-130.corrupt"]
    assert read_meta(run / "checkpoint-130")["epoch"] == 3


# ---------------------------------------------------------------- the crash window of a re-save


def _crash_window(run: Path, *, new: str) -> None:
    """The folders a crash leaves between the two renames of a same-step re-save of step 8:
    the old checkpoint-8 (epoch 1) at .tmp-checkpoint-8-old, the new copy (epoch 2) at
    .tmp-checkpoint-8 ("complete", "incomplete": no meta.json yet, "damaged"), no checkpoint-8."""
    _checkpoint_with_manifest(run, 4)
    _checkpoint_with_manifest(run, 8, epoch=1)
    (run / "checkpoint-8").rename(run / ".tmp-checkpoint-8-old")
    _checkpoint_with_manifest(run, 8, epoch=2)
    (run / "checkpoint-8").rename(run / ".tmp-checkpoint-8")
    if new == "incomplete":
        (run / ".tmp-checkpoint-8" / "meta.json").unlink()
    elif new == "damaged":
        truncate_file(run / ".tmp-checkpoint-8" / "rank_state-0.pt", 1)


@pytest.mark.parametrize(
    ("new", "restored_epoch"), [("complete", 2), ("incomplete", 1), ("damaged", 1)]
)
def test_crash_between_the_renames_of_a_resave_is_restored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], new: str, restored_epoch: int
) -> None:
    run = tmp_path / "run"
    _crash_window(run, new=new)
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-4"]  # what a lookup saw before
    assert find_resume_checkpoint("latest", run) == run / "checkpoint-8"
    assert read_meta(run / "checkpoint-8")["epoch"] == restored_epoch
    assert verify_checkpoint(run / "checkpoint-8") == []
    source = ".tmp-checkpoint-8" if new == "complete" else ".tmp-checkpoint-8-old"
    assert (
        f"restored checkpoint-8 from {source} (a crash interrupted its save)"
        in capsys.readouterr().err
    )
    # The run's start then clears the other copy; nothing that is the only copy of a step goes.
    remove_stale_temporaries(run)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-4", "checkpoint-8"]


def test_crash_window_with_a_damaged_old_copy_moves_it_aside(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _crash_window(run, new="incomplete")
    flip_byte(run / ".tmp-checkpoint-8-old" / "backbone.pt", 0)
    assert remove_stale_temporaries(run) == [run / ".tmp-checkpoint-8"]  # the unfinished save
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-4", "checkpoint-8.corrupt"]
    assert read_meta(run / "checkpoint-8.corrupt")["epoch"] == 1


def test_crash_before_the_swap_replaces_a_damaged_final_copy(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _checkpoint_with_manifest(run, 8, epoch=1)
    truncate_file(run / "checkpoint-8" / "backbone.pt", 1)
    new = _checkpoint_with_manifest(tmp_path / "elsewhere", 8, epoch=2)
    new.rename(run / ".tmp-checkpoint-8")  # the new copy, complete, not yet swapped in
    remove_stale_temporaries(run)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-8", "checkpoint-8.corrupt"]
    assert read_meta(run / "checkpoint-8")["epoch"] == 2


def test_real_run_resumes_from_a_checkpoint_the_crash_window_hid(tmp_path: Path) -> None:
    """A real run dir whose checkpoint-8 sits at .tmp-checkpoint-8-old (the new copy never got
    its meta.json): --resume latest continues from step 8, not from checkpoint-4."""
    first = _run(tmp_path, train={"keep_last": 3})
    run = first.run_dir
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-4", "checkpoint-8"]
    shutil.copytree(run / "checkpoint-8", run / ".tmp-checkpoint-8")
    (run / ".tmp-checkpoint-8" / "meta.json").unlink()
    (run / "checkpoint-8").rename(run / ".tmp-checkpoint-8-old")
    longer = tiny_tabular_config(run, train={"epochs": 3, "warmup_epochs": 0})
    result = run_pretrain(config_from_dict(longer), resume="latest", train_data=toy_tabular(128))
    assert result.step == 12
    assert [int(r["step"]) for r in read_metrics(run / "metrics.csv")] == list(range(1, 13))
    assert [p.name for p in list_checkpoints(run)] == [
        "checkpoint-4",
        "checkpoint-8",
        "checkpoint-12",
    ]
    assert not list(run.glob(".tmp-checkpoint-*"))
