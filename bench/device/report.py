"""results.json's summary (issue 15's goals against what was measured) and results.md, the same
numbers as markdown tables. Reads only the results dict, no torch, so check.sh can still write
the report after the measuring process died.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

SIMCLR = "pretrain_simclr_resnet18"
LOOPS = {  # results key -> table label
    f"{SIMCLR}_ours_eager": "ours (device data + views, channels_last), eager",
    f"{SIMCLR}_ours_compiled": "ours, model.compile=true",
    f"{SIMCLR}_baseline": "same-work baseline: torchvision in DataLoader workers",
    f"{SIMCLR}_lightly": "lightly-style: SimCLRTransform in workers + NTXentLoss",
}
ISD = {"pretrain_isd_myresnet_ours_eager": "ours, eager"}
AUGMENT = "augment_simclr_views"
LOSSES = {"objectives_nt_xent": "NT-Xent (SimCLR)", "objectives_moco": "MoCo (queue)"}
BACKBONES = {
    "backbones_resnet18_cifar_eager": "ResNet-18-CIFAR, eager",
    "backbones_resnet18_cifar_compiled": "ResNet-18-CIFAR, compiled",
    "backbones_myresnet_eager": "MyResNet, eager",
    "backbones_myresnet_compiled": "MyResNet, compiled",
}
Row = dict[str, Any]


def _field(measurements: dict[str, Row], key: str, name: str) -> float | None:
    """A number of a part that ran ("ok"), else None."""
    row = measurements.get(key, {})
    value = row.get(name) if row.get("status") == "ok" else None
    return float(value) if isinstance(value, int | float) else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _goal(value: float | None, target: float | None, at_most: bool, text: str | None) -> Row:
    """{"value", "goal" (text, None without a goal), "met" (None when unknown)}."""
    if value is None or target is None:
        return {"value": value, "goal": text, "met": None}
    return {"value": value, "goal": text, "met": value <= target if at_most else value >= target}


def summarize(measurements: dict[str, Row]) -> Row:
    """Issue 15's goals: ours' SimCLR R18 epoch (the faster of eager and compiled) <= 1.5 s,
    >= 4x the lightly-style loop, augmentation < 5 % of that step, >= 20x torchvision's views/s;
    and, without a goal, ours against the same-work baseline."""
    kinds = [
        (step, kind)
        for kind in ("eager", "compiled")
        if (step := _field(measurements, f"{SIMCLR}_ours_{kind}", "step_s")) is not None
    ]
    best_step, best = min(kinds) if kinds else (None, None)
    epoch = _field(measurements, f"{SIMCLR}_ours_{best}", "epoch_s") if best else None
    lightly = _field(measurements, f"{SIMCLR}_lightly", "step_s")
    baseline = _field(measurements, f"{SIMCLR}_baseline", "step_s")
    augment_ms = _field(measurements, AUGMENT, "ours_ms_per_batch")
    augment_s = augment_ms / 1e3 if augment_ms is not None else None
    views = _field(measurements, AUGMENT, "ours_vs_torchvision")
    return {
        "ours_best": best,
        "simclr_epoch_s": _goal(epoch, 1.5, True, "<= 1.5 s per CIFAR-10 epoch"),
        "simclr_speedup_vs_lightly": _goal(_ratio(lightly, best_step), 4.0, False, ">= 4x"),
        "augment_share_of_step": _goal(_ratio(augment_s, best_step), 0.05, True, "< 0.05"),
        "augment_views_vs_torchvision": _goal(views, 20.0, False, ">= 20x"),
        "simclr_speedup_vs_baseline": _goal(_ratio(baseline, best_step), None, False, None),
    }


def _number(value: Any, digits: int = 2, suffix: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{value:,.{digits}f}{suffix}"


def _percent(value: Any) -> str:
    return "unknown" if value is None else _number(100 * value, 1, " %")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _keyed_table(
    measurements: dict[str, Row],
    labels: dict[str, str],
    header: list[str],
    cells: Callable[[Row], list[str]],
) -> list[str]:
    """One row per key present: its label and cells, or its status (the error is under Problems)."""
    rows = []
    for key, label in labels.items():
        row = measurements.get(key)
        if row is None:
            continue
        if row.get("status") == "ok":
            rows.append([label, *cells(row)])
        else:
            rows.append([label, f"{row.get('status')} (see Problems)", *[""] * (len(header) - 2)])
    return _table(header, rows)


PRETRAIN_HEADER = [
    "loop",
    "s/epoch",
    "ms/step",
    "images/s",
    "warm-up s",
    "peak GiB",
    "TFLOP/s",
    "MFU",
    "vs lightly-style",
]


def _pretrain_cells(lightly_step: float | None) -> Callable[[Row], list[str]]:
    def cells(row: Row) -> list[str]:
        return [
            _number(row["epoch_s"]),
            _number(row["step_s"] * 1e3, 1),
            _number(row["images_per_s"], 0),
            f"{_number(row['warmup_s'], 1)} ({row['warmup_steps']} steps)",
            _number(row["peak_memory_mib"] / 1024),
            _number(row["achieved_tflops"], 1),
            _percent(row["mfu"]),
            _number(_ratio(lightly_step, row["step_s"]), 2, "x"),
        ]

    return cells


def _loss_cells(row: Row) -> list[str]:
    return [
        str(row["n"]),
        _number(row["ours_ms"]),
        _number(row["ours_peak_memory_mib"], 1),
        _number(row["lightly_ms"]),
        _number(row["lightly_peak_memory_mib"], 1),
        _number(row["lightly_over_ours"], 2, "x"),
    ]


def _backbone_cells(row: Row) -> list[str]:
    return [
        _number(row["images_per_s"], 0),
        _number(row["step_s"] * 1e3, 1),
        f"{_number(row['warmup_s'], 1)} ({row['warmup_steps']} steps)",
        _number(row["peak_memory_mib"] / 1024),
        _number(row["achieved_tflops"], 1),
        _percent(row["mfu"]),
    ]


def _header(results: Row) -> list[str]:
    env, sizes = results["environment"], results["sizes"]
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
    lines = [
        "# contrastkit device check",
        "",
        f"Written by `{results['command']}` on {results['date']}; "
        f"{_number(results.get('wall_s'), 0)} s of measuring.",
    ]
    if results["mode"] == "dry-run":
        lines += [
            "",
            "**Dry run**: CPU, tiny sizes, fp32, torch.compile disabled. It proves that the "
            "check runs; its numbers say nothing about a GPU, and neither do its goals.",
        ]
    gpu = env.get("gpu", "none")
    if "gpu_memory_gib" in env:
        gpu += f" ({env['gpu_memory_gib']} GiB, {env.get('gpu_multiprocessors')} SMs)"
    return [
        *lines,
        "",
        f"- GPU: {gpu}; CPU: {env.get('cpu')}, {env.get('cpu_count')} logical CPUs, "
        f"torch threads {env.get('torch_threads')}",
        f"- torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')} "
        f"(cudnn.benchmark {env.get('cudnn_benchmark')}), Python {env.get('python')}",
        f"- packages: {packages}",
        f"- peak: {_number(results.get('peak_tflops'), 0)} TFLOP/s dense bf16 "
        f"({results.get('peak_source')}); MFU counts the backbones' FLOPs",
        f"- data: {results.get('data_source')}",
        f"- sizes: batch {sizes.get('batch')}, {sizes.get('warmup')} warm-up + "
        f"{sizes.get('steps')} timed optimizer steps per loop, precision {sizes.get('precision')}, "
        f"{sizes.get('workers')} DataLoader workers; losses at N = {sizes.get('loss_n')}; "
        f"backbones at batch {sizes.get('backbone_batch')}"
        if sizes
        else "- sizes: none (the check stopped before measuring; see Problems)",
    ]


def _goals(summary: Row) -> list[str]:
    rows = [
        [
            name,
            _number(entry["value"], 3),
            entry["goal"] or "(no goal)",
            {True: "yes", False: "no"}.get(entry["met"], "-"),
        ]
        for name, entry in summary.items()
        if isinstance(entry, dict)
    ]
    best = summary.get("ours_best")
    note = f"Ours is the faster of eager and compiled: {best}." if best else "Ours did not run."
    return ["", "## Goals (issue 15)", "", note, "", *_table(["", "measured", "goal", "met"], rows)]


def _augmentation(measurements: dict[str, Row]) -> list[str]:
    lines = ["", "## Augmentation: two SimCLR views per image", ""]
    row = measurements.get(AUGMENT)
    if row is None or row.get("status") != "ok":
        return [*lines, "Not measured (see Problems)."]
    rows = [
        ["contrastkit.augment on the device, one call", _number(row["ours_device_views_per_s"], 0)],
        [
            f"torchvision v2 per image, DataLoader, {row['torchvision_workers']} workers",
            _number(row["torchvision_cpu_views_per_s"], 0),
        ],
        [
            "kornia AugmentationSequential on the device",
            _number(row.get("kornia_device_views_per_s"), 0),
        ],
    ]
    return [
        *lines,
        *_table(["views of a batch", "views/s"], rows),
        "",
        f"Ours: {_number(row['ours_ms_per_batch'])} ms per batch of {row['batch']} images, "
        f"{_number(row['ours_vs_torchvision'], 1)}x torchvision's views/s; peak "
        f"{_number(row['ours_peak_memory_mib'], 1)} MiB.",
    ]


def _flops(measurements: dict[str, Row]) -> list[str]:
    row = measurements.get("flops", {})
    if row.get("status") != "ok":
        return []
    rows = [
        [
            name,
            _number(counts["forward_flops_per_image"] / 1e9, 3),
            _number(counts["forward_backward_flops_per_image"] / 1e9, 3),
            _number(counts["parameters"], 0),
        ]
        for name, counts in row.items()
        if isinstance(counts, dict)
    ]
    header = ["backbone", "forward GFLOP", "forward + backward GFLOP", "parameters"]
    title = "## FLOPs per 32 px image (FlopCounterMode; a multiply-add is 2 FLOP)"
    return ["", title, "", *_table(header, rows)]


def render(results: Row) -> str:
    """results.md: the header (command, machine, sizes), the goals, one table per measurement,
    then the parts that failed and the notes."""
    m, sizes = results["measurements"], results["sizes"]
    lightly_step = _field(m, f"{SIMCLR}_lightly", "step_s")
    lines = [*_header(results), *_goals(results.get("summary", {}))]
    lines += ["", f"## SimCLR ResNet-18-CIFAR, batch {sizes.get('batch')}", ""]
    lines += _keyed_table(m, LOOPS, PRETRAIN_HEADER, _pretrain_cells(lightly_step))
    lines += ["", "## ISD MyResNet", ""]
    lines += _keyed_table(m, ISD, PRETRAIN_HEADER, _pretrain_cells(None))
    lines += _augmentation(m)
    lines += [
        "",
        f"## Losses, forward + backward, D = 128 (MoCo queue {sizes.get('loss_queue')})",
        "",
    ]
    loss_header = [
        "loss",
        "N",
        "ours ms",
        "ours MiB",
        "lightly ms",
        "lightly MiB",
        "lightly / ours",
    ]
    lines += _keyed_table(m, LOSSES, loss_header, _loss_cells)
    lines += ["", f"## Backbones, forward + backward, batch {sizes.get('backbone_batch')}", ""]
    backbone_header = ["backbone", "images/s", "ms/step", "warm-up s (compile)", "peak GiB"]
    lines += _keyed_table(m, BACKBONES, [*backbone_header, "TFLOP/s", "MFU"], _backbone_cells)
    lines += _flops(m)
    problems = [
        f"- `{k}`: {r['status']}: {r.get('error', '')}"
        for k, r in m.items()
        if r.get("status") != "ok"
    ]
    notes = [f"- `{k}`: {r['note']}" for k, r in m.items() if r.get("note")]
    lines += ["", "## Problems", "", *(problems or ["None: every part ran."])]
    if notes:
        lines += ["", "## Notes", "", *notes]
    return "\n".join(lines) + "\n"
