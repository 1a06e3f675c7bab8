"""bench/device/check.sh --dry-run: the GPU check runs end to end on the CPU at a tiny size, so the
script that a GPU machine runs unchanged cannot rot.

The dry run takes about a minute on 2 cores, so one test runs it once and checks its outputs
with the helpers below (one test, so pytest-xdist never runs it twice in parallel). The numbers
are checked against independent facts: the research note's FLOP count of ResNet-18-CIFAR, and MFU,
epoch time and the goals recomputed from the json's own fields.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "bench" / "device" / "check.sh"
RUN = ROOT / "bench" / "device" / "run.py"
CIFAR_TRAIN = 50_000
SIMCLR = "pretrain_simclr_resnet18"
PRETRAIN = [f"{SIMCLR}_{k}" for k in ("ours_eager", "ours_compiled", "baseline", "lightly")]
PRETRAIN.append("pretrain_isd_myresnet_ours_eager")
BACKBONES = [
    f"backbones_{name}_{kind}"
    for name in ("resnet18_cifar", "myresnet")
    for kind in ("eager", "compiled")
]
MEASUREMENTS = [
    "flops",
    *PRETRAIN,
    "augment_simclr_views",
    "objectives_nt_xent",
    "objectives_moco",
    *BACKBONES,
]


def _dry_run(out: Path) -> tuple[dict[str, Any], str]:
    """(results.json, the command's output) of `check.sh --dry-run --out out`."""
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    done = subprocess.run(
        ["bash", str(CHECK), "--dry-run", "--out", str(out), "--threads", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    return json.loads((out / "results.json").read_text()), output


@pytest.mark.slow
def test_the_dry_run_measures_everything(tmp_path: Path) -> None:
    results, output = _dry_run(tmp_path)
    _check_every_measurement_ran_and_is_finite(results, output, tmp_path)
    _check_nothing_is_installed_when_everything_imports(output)
    _check_flop_counts_are_the_research_notes(results)
    _check_mfu_and_epoch_time_follow_from_the_json(results)
    _check_summary_follows_from_the_measurements(results)
    _check_the_markdown_shows_the_json(results, tmp_path)


def _numbers(value: Any, where: str = "") -> list[tuple[str, float]]:
    """Every number inside `value` (bools are not numbers here), with its path."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [(where, float(value))]
    if isinstance(value, dict):
        return [n for k, v in value.items() for n in _numbers(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [n for i, v in enumerate(value) for n in _numbers(v, f"{where}[{i}]")]
    return []


def _check_every_measurement_ran_and_is_finite(
    results: dict[str, Any], output: str, out: Path
) -> None:
    assert (out / "results.md").is_file()
    assert results["mode"] == "dry-run"
    measurements = results["measurements"]
    lightly_hint = ""
    if "lightning_utilities" in json.dumps(measurements):
        lightly_hint = " (lightly.transforms needs lightning-utilities installed)"
    for key in MEASUREMENTS:
        row = measurements.get(key, {"status": "absent"})
        assert row["status"] == "ok", f"{key}: {row}{lightly_hint}\n{output[-3000:]}"
    numbers = _numbers(measurements) + _numbers(results["summary"])
    bad = [(where, value) for where, value in numbers if not math.isfinite(value)]
    assert not bad, bad
    for key in (*PRETRAIN, *BACKBONES):
        for field in ("step_s", "images_per_s", "warmup_s", "peak_memory_mib", "mfu"):
            assert isinstance(measurements[key][field], float), (key, field)
    for name in ("ours_device_views_per_s", "torchvision_cpu_views_per_s", "ours_ms_per_batch"):
        assert measurements["augment_simclr_views"][name] > 0
    for key in ("objectives_nt_xent", "objectives_moco"):
        assert measurements[key]["ours_ms"] > 0 and measurements[key]["lightly_ms"] > 0


def _check_nothing_is_installed_when_everything_imports(output: str) -> None:
    assert "wheels.txt (run): everything imports; installed nothing" in output
    assert "contrastkit: every package imports; installed nothing" in output
    assert "installing from" not in output


def _check_flop_counts_are_the_research_notes(results: dict[str, Any]) -> None:
    """../shared/research/performance.md §1: ResNet-18-CIFAR 1.111 GFLOP forward per 32 px
    image (0.556 GMAC), forward + backward 3x that; MyResNet 0.658 forward. Parameters: 11,173,962
    with a 10-class head (512 * 10 + 10 of them), so 11,168,832 for the backbone."""
    flops = results["measurements"]["flops"]
    resnet, myresnet = flops["resnet18_cifar"], flops["myresnet"]
    assert resnet["forward_flops_per_image"] == pytest.approx(1.111e9, rel=2e-3)
    assert resnet["forward_backward_flops_per_image"] == pytest.approx(3.33e9, rel=2e-3)
    assert myresnet["forward_flops_per_image"] == pytest.approx(0.658e9, rel=2e-3)
    assert resnet["parameters"] == 11_173_962 - (512 * 10 + 10)


def _check_mfu_and_epoch_time_follow_from_the_json(results: dict[str, Any]) -> None:
    measurements, peak = results["measurements"], results["peak_tflops"]
    assert peak == 1.0  # the dry run's stated peak, for this arithmetic
    counts = measurements["flops"]

    def per_image(key: str) -> float:
        if key.startswith(SIMCLR):  # both views, forward and backward
            return 2 * counts["resnet18_cifar"]["forward_backward_flops_per_image"]
        if key.startswith("pretrain_isd"):  # student forward + backward, teacher forward
            mine = counts["myresnet"]
            return mine["forward_backward_flops_per_image"] + mine["forward_flops_per_image"]
        name = "resnet18_cifar" if "resnet18" in key else "myresnet"
        return counts[name]["forward_backward_flops_per_image"]

    for key in (*PRETRAIN, *BACKBONES):
        row = measurements[key]
        flops_per_step = per_image(key) * row["batch"]
        assert row["model_flops_per_step"] == pytest.approx(flops_per_step, rel=1e-9)
        assert row["mfu"] == pytest.approx(flops_per_step / row["step_s"] / (peak * 1e12))
        assert row["images_per_s"] == pytest.approx(row["batch"] / row["step_s"])
        if key in PRETRAIN:
            assert row["epoch_s"] == pytest.approx(row["step_s"] * (CIFAR_TRAIN // row["batch"]))
            assert row["timed_steps"] == results["sizes"]["steps"]


def _check_summary_follows_from_the_measurements(results: dict[str, Any]) -> None:
    measurements, summary = results["measurements"], results["summary"]
    steps = {k: measurements[f"{SIMCLR}_ours_{k}"]["step_s"] for k in ("eager", "compiled")}
    best = min(steps, key=steps.__getitem__)
    assert summary["ours_best"] == best
    lightly = measurements[f"{SIMCLR}_lightly"]["step_s"]
    speedup = summary["simclr_speedup_vs_lightly"]
    assert speedup["value"] == pytest.approx(lightly / steps[best])
    assert speedup["met"] == (speedup["value"] >= 4)
    share = measurements["augment_simclr_views"]["ours_ms_per_batch"] / 1e3 / steps[best]
    assert summary["augment_share_of_step"]["value"] == pytest.approx(share)


def _check_the_markdown_shows_the_json(results: dict[str, Any], out: Path) -> None:
    markdown = (out / "results.md").read_text()
    assert "**Dry run**" in markdown and "None: every part ran." in markdown
    eager = results["measurements"][f"{SIMCLR}_ours_eager"]
    assert f"| {eager['epoch_s']:,.2f} | {eager['step_s'] * 1e3:,.1f} |" in markdown
    resnet = results["measurements"]["flops"]["resnet18_cifar"]
    assert f"{resnet['forward_flops_per_image'] / 1e9:.3f}" in markdown


def test_a_dead_measuring_process_is_recorded(tmp_path: Path) -> None:
    """What check.sh does after run.py died: --finalize marks the part it was in as failed and
    rewrites both files (no torch needed)."""
    results = {
        "schema": 1,
        "command": "bash bench/device/check.sh",
        "mode": "gpu",
        "date": "today",
        "started_unix": 0.0,
        "environment": {},
        "sizes": {},
        "measurements": {"flops": {"status": "running"}},
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    subprocess.run(
        [sys.executable, str(RUN), "--out", str(tmp_path), "--finalize", "137"], check=True
    )
    row = json.loads((tmp_path / "results.json").read_text())["measurements"]["flops"]
    assert row["status"] == "error" and "exit status 137" in row["error"]
    assert "`flops`: error" in (tmp_path / "results.md").read_text()


def test_no_output_folder_is_an_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    done = subprocess.run(
        ["bash", str(CHECK), "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "--out" in done.stderr


def test_a_failing_or_slow_part_is_recorded_and_the_next_goes_on(tmp_path: Path) -> None:
    """run.py's part runner turns an exception or a part past its time limit into that part's
    error row (run in a subprocess: run.py puts bench/ on sys.path)."""
    script = f"""
import json, sys, time
sys.path.insert(0, {str(RUN.parent)!r})
import run
rows = [
    run._run_part(lambda settings: {{"x": 1 / 0}}, None, 30),
    run._run_part(lambda settings: time.sleep(10), None, 1),
    run._run_part(lambda settings: {{"x": 2.0}}, None, 30),
]
print(json.dumps(rows))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    divide, slow, fine = json.loads(done.stdout.strip().splitlines()[-1])
    assert divide["status"] == "error" and divide["error"].startswith("ZeroDivisionError")
    assert slow["status"] == "error" and "past its 1 s limit" in slow["error"]
    assert slow["seconds"] < 5
    assert fine["status"] == "ok" and fine["x"] == 2.0
