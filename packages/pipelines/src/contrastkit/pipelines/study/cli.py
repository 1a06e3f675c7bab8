"""The `contrastkit-study` command (also `python packages/pipelines/study.py`): `run` a study,
`list` the shipped studies, `report` an output folder again.

Exit status: 0 done (or a run stopped by a signal, with the command that continues it printed);
1 a training's loss became non-finite; 2 bad input, said in one line
`contrastkit-study: error: ...`; 130 interrupted outside a training (Ctrl-C, SIGTERM or SIGHUP
while estimating, probing or reporting), with the command that continues printed.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from contrastkit.pipelines.cli_errors import OneLineParser, one_line_reason

PROG = "contrastkit-study"
EXIT_OK, EXIT_DIVERGED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

EPILOG = """\
examples:
  python packages/pipelines/study.py list
  python packages/pipelines/study.py run imix_covtype --profile cpu
  python packages/pipelines/study.py run imix_covtype --profile cpu --cells npair --seeds 0
  python packages/pipelines/study.py report runs/studies/imix_covtype_cpu

`run` skips the (cell, seed) pairs already in the output folder's cells.csv, resumes an
interrupted pretraining from its newest checkpoint, prints an estimated wall time (from a few
timed optimizer steps of each cell) before it starts, and ends by writing REPORT.md.

exit status: 0 done, or stopped by a signal after a checkpoint (the command that continues is
printed); 1 a loss became NaN or infinite; 2 bad input (one line says what); 130 stopped by
Ctrl-C, SIGTERM or SIGHUP outside a training (while estimating, probing or reporting)."""


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated cell names, got {text!r}")
    return names


def _seeds(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints >= 0 (e.g. 0,1,2), got {text!r}"
        )
    return [int(part) for part in parts]


def build_parser() -> argparse.ArgumentParser:
    """The `contrastkit-study` parser: the sub-commands run, list and report."""
    parser = OneLineParser(
        prog=PROG,
        description="Reproduction studies: rerun a paper's grid of cells and seeds at the "
        "paper's scale (gpu) or scaled down (cpu), and report against the published numbers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,list,report}")
    run = commands.add_parser("run", help="run (or continue) a study, then write its report")
    run.add_argument("study", help="a shipped study's name (see `list`) or a study YAML file")
    run.add_argument("--profile", choices=("cpu", "gpu"), default="cpu",
                     help="gpu: the paper's scale; cpu: scaled down for 2 CPU cores (default)")  # fmt: skip
    run.add_argument("--cells", type=_names, help="comma-separated cells (default: all)")
    run.add_argument("--seeds", type=_seeds, help="comma-separated seeds (default: the profile's)")
    run.add_argument("--output-dir", help="output folder (default: runs/studies/<study>_<profile>)")
    run.add_argument("--no-estimate", action="store_true",
                     help="skip the timed steps and the wall-time estimate")  # fmt: skip
    commands.add_parser("list", help="list the shipped studies")
    report = commands.add_parser("report", help="write REPORT.md of a study's output folder again")
    report.add_argument("output_dir", metavar="DIR", help="a study's output folder")
    return parser


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (unless ignored, as under nohup) raise KeyboardInterrupt, as Ctrl-C
    does, for the parts of a study outside a training (the estimate, the probes, the report):
    the study then ends with the command that continues it instead of dying silently. A
    training installs its own handlers (checkpoint, then stop) and puts these back after."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signums = [signal.SIGTERM]
    hangup = getattr(signal, "SIGHUP", None)  # none on Windows
    if hangup is not None and signal.getsignal(hangup) != signal.SIG_IGN:
        signums.append(hangup)
    previous = {signum: signal.signal(signum, interrupt) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default sys.argv[1:]); returns the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    command = None
    try:
        if args.command == "list":
            _list()
        elif args.command == "report":
            from contrastkit.pipelines.study.report import write_report

            print(f"{PROG}: report {write_report(args.output_dir)}")
        else:
            from contrastkit.pipelines.study.runner import run_study, study_command
            from contrastkit.pipelines.study.spec import load_study

            spec = load_study(args.study)
            command = study_command(spec, args.profile, cells=args.cells, seeds=args.seeds,
                                    output_dir=args.output_dir)  # fmt: skip
            with _signals_interrupt():
                run_study(spec, args.profile, cells=args.cells, seeds=args.seeds,
                          output_dir=args.output_dir, estimate=not args.no_estimate)  # fmt: skip
    except FloatingPointError as error:  # training's NonFiniteLossError: the loss diverged
        print(f"{PROG}: stopped: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except (ValueError, OSError) as error:
        print(f"{PROG}: error: {one_line_reason(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as stop:
        again = f"; continue with: {command}" if command else ""
        by = f" by {stop.args[0]}" if stop.args else ""
        print(f"{PROG}: interrupted{by}{again}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _list() -> None:
    """One block per shipped study: name, cells, profiles, the description's first sentence."""
    from contrastkit.pipelines.study.spec import STUDIES_DIR, list_studies

    studies = list_studies()
    if not studies:
        print(f"no studies in {STUDIES_DIR} (a study YAML file can be given to `run` by path)")
    for spec in studies:
        first = spec.description.strip().split(". ")[0].rstrip(".")
        profiles = ", ".join(
            f"{name} ({len(p.seeds)} seed{'s' if len(p.seeds) != 1 else ''})"
            for name, p in spec.profiles.items()
        )
        print(f"{spec.name}: {len(spec.cells)} cells ({', '.join(spec.cells)}); {profiles}")
        if first:
            print(f"  {first}.")
        print(f"  python packages/pipelines/study.py run {spec.name} --profile cpu")
