"""metrics.csv: fixed columns, exact floats, empty cells for unmeasured values, and the truncation a
resumed run applies so the log reads as one uninterrupted run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pretrain_helpers import tiny_tabular_config, toy_tabular

from contrastkit.pipelines.config import config_from_dict
from contrastkit.pipelines.metrics import (
    METRIC_COLUMNS,
    TENSORBOARD_MISSING,
    MetricsLogger,
    read_metrics,
)


def test_rows_keep_exact_floats_and_blank_unmeasured(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, tensorboard=False)
    loss = 0.1 + 0.2  # 0.30000000000000004: repr keeps every bit
    logger.log({"step": 1, "epoch": 0.5, "loss": loss, "lr": 1e-3})
    logger.log({"step": 2, "epoch": 1.0, "loss": float("nan"), "lr": 1e-3, "knn_top1": 55.5})
    logger.close()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert list(rows[0]) == list(METRIC_COLUMNS)
    assert float(rows[0]["loss"]) == loss and rows[0]["knn_top1"] == ""
    assert rows[1]["loss"] == "nan" and rows[1]["knn_top1"] == "55.5"


def test_resume_drops_rows_after_the_checkpoint(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, tensorboard=False)
    for step in range(1, 8):
        logger.log({"step": step, "loss": float(step)})
    logger.close()
    resumed = MetricsLogger(tmp_path, resume_step=4, tensorboard=False)
    resumed.log({"step": 5, "loss": 50.0})
    resumed.close()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [(r["step"], r["loss"]) for r in rows] == [
        ("1", "1.0"), ("2", "2.0"), ("3", "3.0"), ("4", "4.0"), ("5", "50.0"),
    ]  # fmt: skip
    fresh = MetricsLogger(tmp_path, tensorboard=False)  # a new run starts a new log
    fresh.close()
    assert read_metrics(tmp_path / "metrics.csv") == []


def test_bad_rows_are_refused(tmp_path: Path) -> None:
    logger = MetricsLogger(tmp_path, tensorboard=False)
    with pytest.raises(ValueError, match=r"unknown metric column\(s\) \['accuracy'\]"):
        logger.log({"step": 1, "accuracy": 3.0})
    with pytest.raises(ValueError, match="a metrics row needs a 'step'"):
        logger.log({"loss": 1.0})
    logger.close()


def test_tensorboard_mirror(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = MetricsLogger(tmp_path)
    assert logger.tensorboard_enabled
    for step in (1, 2):
        logger.log({"step": step, "loss": 1.0 / step, "lr": 0.1})
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("pretrain/loss")] == [(1, 1.0), (2, 0.5)]


def _block_tensorboard(monkeypatch: pytest.MonkeyPatch, *, whole_package: bool) -> None:
    """Make importing tensorboard fail as if it were not installed (None in sys.modules makes
    `import` raise ImportError and importlib.util.find_spec return None)."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    if whole_package:
        monkeypatch.setitem(sys.modules, "tensorboard", None)


@pytest.mark.parametrize("whole_package", [True, False], ids=["not installed", "import fails"])
def test_without_tensorboard_the_log_says_so_once_and_writes_the_csv(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    whole_package: bool,
) -> None:
    _block_tensorboard(monkeypatch, whole_package=whole_package)
    logger = MetricsLogger(tmp_path)
    for step in (1, 2, 3):
        logger.log({"step": step, "loss": 1.0 / step})
    logger.close()
    assert not logger.tensorboard_enabled
    assert capsys.readouterr().err.splitlines() == [TENSORBOARD_MISSING]
    assert "pip install 'contrastkit-pipelines[tensorboard]'" in TENSORBOARD_MISSING
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.csv")] == ["1", "2", "3"]
    assert not (tmp_path / "tensorboard").exists()
    quiet = MetricsLogger(tmp_path / "quiet", tensorboard=False)  # not asked for: no note
    quiet.close()
    assert capsys.readouterr().err == ""


def test_tensorboard_is_opened_at_the_first_row(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    logger = MetricsLogger(tmp_path)
    assert not (tmp_path / "tensorboard").exists()  # nothing imported or written at start
    logger.log({"step": 1, "loss": 1.0})
    logger.close()
    assert any((tmp_path / "tensorboard").iterdir())


def test_a_run_without_tensorboard_says_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pretrain command's run (2 epochs, 16 logged steps) prints the note one time."""
    from contrastkit.pipelines.pretrain import run_pretrain

    _block_tensorboard(monkeypatch, whole_package=True)
    config = config_from_dict(tiny_tabular_config(tmp_path / "run"))
    run_pretrain(config, train_data=toy_tabular(256))
    assert capsys.readouterr().err.count("tensorboard is not installed") == 1
    assert len(read_metrics(tmp_path / "run" / "metrics.csv")) == 16
    assert not (tmp_path / "run" / "tensorboard").exists()
