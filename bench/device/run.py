"""Run every measurement of the device check in one process and write results.json / results.md.

check.sh calls it (after installing what is missing); read check.sh first. Each part is a
function of the Settings; it runs under a time limit (SIGALRM), and its failure is written into
results.json as that part's error while the next part goes on. results.json and results.md are
rewritten after every part, so a process that dies leaves what it measured: check.sh then calls
`run.py --resume`, which marks the part that was running as failed and measures the rest, and
finally `run.py --finalize`.

    python bench/device/run.py --out DIR [--dry-run] [--data-dir DIR] [--peak-tflops X]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # bench/device/ and bench/ modules by name

from report import render, summarize  # noqa: E402 - needs the path above

SCHEMA = 1


class PartTimeout(Exception):
    """A part ran past its time limit."""


class SetupError(Exception):
    """Nothing could be measured: the settings, inputs or environment failed (see __cause__)."""


def parts() -> list[tuple[str, Callable[[Any], dict[str, Any]], float]]:
    """(results key, function of the Settings, time limit in seconds on the GPU), in the order
    they run: the cheap and the essential first, compilation last."""
    import augment_part
    import backbones_part
    import flops
    import objectives_part
    import pretrain_parts as pretrain

    def count_flops(settings: Any) -> dict[str, Any]:
        settings.flops = flops.count_all()
        return dict(settings.flops)

    def backbone(name: str, compiled: bool) -> Callable[[Any], dict[str, Any]]:
        return lambda s: backbones_part.backbone_throughput(s, name, compiled)

    simclr = "pretrain_simclr_resnet18"
    return [
        ("flops", count_flops, 60),
        (f"{simclr}_ours_eager", lambda s: pretrain.simclr_ours(s, compiled=False), 120),
        (f"{simclr}_baseline", pretrain.simclr_baseline, 120),
        (f"{simclr}_lightly", pretrain.simclr_lightly, 120),
        ("pretrain_isd_myresnet_ours_eager", pretrain.isd_ours, 90),
        ("augment_simclr_views", augment_part.augmentation, 90),
        ("objectives_nt_xent", lambda s: objectives_part.loss_vs_lightly(s, "nt_xent"), 60),
        ("objectives_moco", lambda s: objectives_part.loss_vs_lightly(s, "moco"), 60),
        ("backbones_resnet18_cifar_eager", backbone("resnet18_cifar", False), 60),
        ("backbones_myresnet_eager", backbone("myresnet", False), 60),
        (f"{simclr}_ours_compiled", lambda s: pretrain.simclr_ours(s, compiled=True), 300),
        ("backbones_resnet18_cifar_compiled", backbone("resnet18_cifar", True), 180),
        ("backbones_myresnet_compiled", backbone("myresnet", True), 180),
    ]


def write(out: Path, results: dict[str, Any]) -> None:
    """results.json and results.md, each replaced in one rename."""
    results["summary"] = summarize(results["measurements"])
    for name, text in (
        ("results.json", json.dumps(results, indent=2, allow_nan=True) + "\n"),
        ("results.md", render(results)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


def _crashed(results: dict[str, Any], exit_status: str) -> None:
    """Mark the part a dead process was running as failed."""
    for row in results["measurements"].values():
        if row.get("status") == "running":
            row["status"] = "error"
            row["error"] = (
                f"the measuring process ended during this part (exit status {exit_status}: "
                "124 = check.sh's time limit, 137 = killed, 139 = segfault)"
            )


def _run_part(
    function: Callable[[Any], dict[str, Any]], settings: Any, limit: float
) -> dict[str, Any]:
    """The part's row: its numbers with status "ok", or its error."""

    def alarm(signum: int, frame: Any) -> None:
        raise PartTimeout(f"ran past its {limit:.0f} s limit")

    start = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(max(1, int(limit)))
    try:
        row = {"status": "ok", **function(settings)}
    except Exception as error:
        lines = traceback.format_exception(type(error), error, error.__traceback__)
        row = {
            "status": "error",
            "error": f"{type(error).__name__}: {error}",
            "traceback": "".join(lines)[-3000:],
        }
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    row["seconds"] = time.perf_counter() - start
    return row


def measure(args: argparse.Namespace, results: dict[str, Any], deadline: float) -> None:
    """Every part not yet in `results`, in order, each within the time left before `deadline`."""
    try:
        import torch
        from _machine import apply_threads
        from environment import describe, peak_tflops
        from settings import make_settings
    except Exception as error:  # e.g. a package that failed to install
        raise SetupError("imports") from error

    try:
        apply_threads(args.threads)
        results["environment"] = describe()
        if args.dry_run:
            torch._dynamo.config.disable = True  # Inductor's C++ build would take minutes on a CPU
        settings = make_settings(args.dry_run, args.data_dir, peak_tflops(args.peak_tflops))
    except (Exception, SystemExit) as error:
        raise SetupError("settings") from error
    # The pipeline reads its precision from accelerate's environment, as under `accelerate launch`.
    os.environ["ACCELERATE_MIXED_PRECISION"] = settings.precision
    flops_row = results["measurements"].get("flops", {})
    if flops_row.get("status") == "ok":  # resumed: the counts are known
        settings.flops = {k: v for k, v in flops_row.items() if isinstance(v, dict)}
    results.update(
        sizes=settings.sizes(),
        peak_tflops=settings.peak_tflops,
        peak_source=settings.peak_source,
        data_source=settings.data_source,
    )
    env = results["environment"]
    print(
        f"device check ({results['mode']}): torch {env['torch']}, CUDA {env['cuda']}, GPU "
        f"{env['gpu']}, {env['cpu_count']} CPUs, torch threads {env['torch_threads']}; peak "
        f"{settings.peak_tflops} TFLOP/s ({settings.peak_source}); {settings.data_source}",
        flush=True,
    )
    out, minimum = args.out, 5.0 if args.dry_run else 20.0
    for key, function, limit in parts():
        if key in results["measurements"]:
            continue  # measured (or failed) before a restart
        left = deadline - time.monotonic()
        if left < minimum:
            results["measurements"][key] = {
                "status": "skipped",
                "error": f"not run: {left:.0f} s of the time budget were left",
            }
            continue
        results["measurements"][key] = {"status": "running"}
        write(out, results)
        print(f"[{key}] ...", flush=True)
        row = _run_part(function, settings, min(limit, left))
        results["measurements"][key] = row
        results["wall_s"] = time.time() - results["started_unix"]
        write(out, results)
        shown = row.get("error") or ", ".join(
            f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)
        )
        print(f"[{key}] {row['status']} in {row['seconds']:.1f} s: {shown}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json/.md")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, fp32")
    parser.add_argument("--data-dir", type=Path, default=None, help="CIFAR-10 (else synthetic)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the peak table")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--budget-s", type=float, default=510.0, help="stop starting parts after")
    parser.add_argument("--command", default="python bench/device/run.py", help="for the report")
    parser.add_argument("--resume", metavar="EXIT_STATUS", help="continue after a dead process")
    parser.add_argument("--finalize", metavar="EXIT_STATUS", help="only close the report")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    if args.resume or args.finalize:
        results = json.loads(path.read_text())
        _crashed(results, args.resume or args.finalize)
        if args.finalize:
            results["wall_s"] = time.time() - results["started_unix"]
            write(args.out, results)
            return 0
    else:
        results = {
            "schema": SCHEMA,
            "command": args.command,
            "mode": "dry-run" if args.dry_run else "gpu",
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "started_unix": time.time(),
            "environment": {},
            "sizes": {},
            "measurements": {},
        }
    try:
        measure(args, results, time.monotonic() + args.budget_s)
    except SetupError as error:
        print(f"run.py: could not start measuring: {error.__cause__!r}", file=sys.stderr)
        results["measurements"].setdefault(
            "setup", {"status": "error", "error": repr(error.__cause__)}
        )
        results["wall_s"] = time.time() - results["started_unix"]
        write(args.out, results)
        return 3
    results["wall_s"] = time.time() - results["started_unix"]
    write(args.out, results)
    failed = [k for k, r in results["measurements"].items() if r.get("status") != "ok"]
    print(f"wrote {args.out}/results.json and results.md; not ok: {failed or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
