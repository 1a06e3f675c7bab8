"""Checkpoint folders: finding them, writing them atomically, pruning, their contents, and the resume
rules (incompatible configs refused without writing anything, allowed changes accepted)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from pretrain_helpers import tiny_tabular_config, toy_tabular

from contrastkit.backbones import create_backbone
from contrastkit.pipelines.checkpoint import (
    check_resume_compatible,
    list_checkpoints,
    prune_checkpoints,
    read_meta,
    remove_stale_temporaries,
    resolve_checkpoint,
    resume_mismatches,
    save_checkpoint,
)
from contrastkit.pipelines.config import config_from_dict, config_to_dict, load_config
from contrastkit.pipelines.metrics import read_metrics
from contrastkit.pipelines.pretrain import run_pretrain
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
