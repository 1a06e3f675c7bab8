"""metrics.csv: fixed columns, exact floats, empty cells for unmeasured values, and the truncation a
resumed run applies so the log reads as one uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest

from contrastkit.pipelines.metrics import METRIC_COLUMNS, MetricsLogger, read_metrics


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
