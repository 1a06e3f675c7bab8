"""The benches compare equal work: the baseline loops of bench/_pretrain_loops.py do what one
pipeline step does (LR schedule, EMA teacher, logging sums, GradScaler for fp16), time the same
steps the same way, and every bench script takes --threads (default: all cores).

Checked against independent computations: the EMA formula, the warm-up + cosine schedule written
out by hand, the mean of the logged values.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SCRIPTS = ["pretrain", "augment", "objectives", "backbones", "config_error", "startup"]


@pytest.fixture
def loops(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))
    import _pretrain_loops

    return _pretrain_loops


def _isd_objects(loops: ModuleType, total: int) -> Any:
    """ISD MyResNet at batch 4 with a large lr (so that one step visibly moves the student), the
    warm-up + cosine schedule and an EMA momentum of 0.5."""
    from contrastkit.pipelines.config import config_from_dict

    raw = loops.pretrain_config(loops.CASES["isd_myresnet"], 4, 2, Path("unused"), queue_size=64)
    raw["method"]["momentum"] = 0.5
    raw["optimizer"] = {"lr": 10.0, "schedule": "warmup_cosine"}
    return loops.TrainingObjects(config_from_dict(raw), torch.device("cpu"), total, "no")


def _batch(seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    views = [torch.randn(4, 3, 32, 32, generator=generator) for _ in range(2)]
    return views, torch.arange(4)


def test_a_baseline_step_moves_the_ema_teacher_and_the_schedule(loops: ModuleType) -> None:
    torch.manual_seed(0)
    total = 4
    train = _isd_objects(loops, total)
    method = train.model.method
    step = loops.pipeline_step(train)
    teacher_before = [p.detach().clone() for p in method.teacher.module.parameters()]
    student_before = [p.detach().clone() for p in method.encoder.parameters()]

    step(_batch(0), 0)

    student = [p.detach() for p in method.encoder.parameters()]
    teacher = [p.detach() for p in method.teacher.module.parameters()]
    assert max((s - s0).abs().max().item() for s, s0 in zip(student, student_before)) > 1e-4
    for t, t0, s in zip(teacher, teacher_before, student):  # t = m t0 + (1 - m) s, m = 0.5
        torch.testing.assert_close(t, 0.5 * t0 + 0.5 * s, rtol=1e-5, atol=1e-7)

    for index in (1, 2):
        step(_batch(index), index)
    # Peak lr = lr * batch / 256; 2 warm-up steps (half the epoch), then half a cosine to 0.
    peak, warmup = 10.0 * 4 / 256, 2
    expected = peak * 0.5 * (1 + math.cos(math.pi * (3 - warmup) / (total - warmup)))
    assert train.scheduler.last_epoch == 3
    assert train.optimizer.param_groups[0]["lr"] == pytest.approx(expected)


def test_fp16_steps_through_a_grad_scaler(loops: ModuleType) -> None:
    from contrastkit.pipelines.config import config_from_dict

    raw = loops.pretrain_config(loops.CASES["simclr_resnet18"], 4, 1, Path("unused"))
    config = config_from_dict(raw)
    cpu = torch.device("cpu")
    assert loops.TrainingObjects(config, cpu, 2, "fp16").scaler.is_enabled()
    assert not loops.TrainingObjects(config, cpu, 2, "bf16").scaler.is_enabled()
    assert not loops.TrainingObjects(config, cpu, 2, "no").scaler.is_enabled()


def test_the_log_window_reads_the_mean_and_refuses_non_finite_values(loops: ModuleType) -> None:
    window = loops.LogWindow()
    for value in (1.0, 2.0, 6.0):
        loss = torch.tensor(value)
        window.add({"loss": loss, "online_top1": 2 * loss}, loss)
    assert window.read() == [3.0, 6.0]
    assert window.steps == 0
    window.add({"loss": torch.tensor(float("nan"))}, torch.tensor(float("nan")))
    with pytest.raises(FloatingPointError):
        window.read()


def test_run_steps_times_the_steps_after_the_warm_up(
    loops: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake clock: warm-up steps take 5 s, timed ones 1 s; rows (the host reads) come every
    `warmup` steps and after the last step, as the pipeline with train.log_every = warmup."""
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(loops, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    reads: list[int] = []
    done = {"steps": 0}
    real_read = loops.LogWindow.read

    def read(window: Any) -> list[float]:
        reads.append(done["steps"])
        return real_read(window)

    monkeypatch.setattr(loops.LogWindow, "read", read)

    def step(item: int, index: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        clock.now += 5.0 if index < 2 else 1.0
        done["steps"] = index + 1
        loss = torch.tensor(float(item))
        return {"loss": loss}, loss

    timing = loops.run_steps(iter(range(100)), step, warmup=2, steps=3, batch=8)
    assert reads == [2, 4, 5]
    assert (timing.warmup_s, timing.step_s, timing.steps) == (10.0, 1.0, 3)
    assert timing.images_per_s == 8.0
    assert timing.epoch_s == 50_000 // 8 * 1.0


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_bench_takes_threads_defaulting_to_all_cores(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{script}.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert "--threads" in done.stdout
    assert f"all cores, {os.cpu_count()} here" in " ".join(done.stdout.split())
