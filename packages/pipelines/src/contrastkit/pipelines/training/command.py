"""The command line every training task shares (`contrastkit-pretrain`, `contrastkit-joint`):
--config, --output-dir, --data-dir, --resume, --print-config and section.field=value overrides in
any order, and the exit status a run ends with.

Importing this module loads no torch. The config is read, overridden and checked
(`config.check_raw_config`) before the task's heavy imports, so a bad key or value is answered in
about a second; `TaskCommand` names a task by its module so the scripts can do exactly that.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contrastkit.pipelines.config import (
    PretrainConfig,
    apply_overrides,
    check_raw_config,
    config_from_dict,
    config_to_yaml,
    read_config_file,
)
from contrastkit.pipelines.preflight import describe_os_error
from contrastkit.pipelines.run_files import CONFIG_FILE

if TYPE_CHECKING:
    from contrastkit.pipelines.training.task import TrainingResult, TrainingTask

EXIT_OK, EXIT_DIVERGED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED = 130  # Ctrl-C after the start-up, before the run's own handlers took over

HELP_EPILOG = """\
Options and section.field=value overrides may come in any order. A shipped config is shortened
in one line, e.g. train.epochs=2 train.warmup_epochs=0.2 (the warm-up must fit in the run).

Processes and precision come from the launcher (accelerate launch --num_processes N
--mixed_precision bf16 ...). Run `accelerate config default` once per machine: it writes a
default accelerate config for it (~/.cache/huggingface/accelerate/default_config.yaml: one
process per GPU it finds, or one CPU process; no mixed precision), so `accelerate launch` stops
warning that --num_processes, --num_machines, --mixed_precision and --dynamo_backend were not
given (on a CPU-only machine set OMP_NUM_THREADS as well). accelerate launch turns any failure
into its own exit status 1 (--quiet drops its traceback); the script run with python, or the
console script, exits with the status below.

exit status:
  0  done, or stopped by SIGTERM / SIGINT / SIGHUP (or by its launcher exiting) after saving a
     checkpoint; the command that continues the run is printed
  1  the loss became NaN or infinite (training diverged); the last good checkpoint is kept
  2  bad input: the config, a data or output path, a checkpoint, or an output dir in use by
     another run; one line names it
  128 + signal number: stopped while starting (config checks, imports), before anything was
     written (130 for Ctrl-C)
"""


@dataclass(frozen=True)
class TaskCommand:
    """A training command known before its task's module is imported (that import loads torch).

    command: the console script's name (every message starts with it); config_class: the config
    it reads; task: its TrainingTask as "module:Class", imported once the command line and the
    config passed the checks that need no torch.
    """

    command: str
    config_class: type[PretrainConfig]
    task: str

    def load_task(self) -> TrainingTask:
        """A new instance of the task class."""
        module, _, name = self.task.partition(":")
        return getattr(importlib.import_module(module), name)()


def build_parser(task: TrainingTask) -> argparse.ArgumentParser:
    """The command line of `task`'s command, with its description and example in --help."""
    return _parser(task.command, task.description, f"Example: {task.example}\n\n{HELP_EPILOG}")


def _parser(
    prog: str, description: str | None, epilog: str | None, *, add_help: bool = True
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=add_help,
    )
    if not add_help:  # --help asks for the task's own parser (its description and example)
        parser.add_argument("-h", "--help", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help="YAML config file (see the package README)")
    parser.add_argument("--output-dir", help="run directory (overrides train.output_dir)")
    parser.add_argument("--data-dir", help="data location (overrides data.data_dir)")
    parser.add_argument(
        "--resume",
        metavar="latest|PATH",
        help="continue from the newest checkpoint of the output dir, or from a checkpoint folder / run dir",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (every default and method preset filled in) as YAML and "
        "exit, without reading data or writing anything",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="section.field=value",
        help="config overrides, values parsed as YAML, before, between or after the options",
    )
    return parser


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Options and overrides in any order (`parse_intermixed_args`). An unknown option is an
    error that says how config fields are set, since that is what it usually was meant to be."""
    args, unknown = parser.parse_known_intermixed_args(list(argv))
    if unknown:
        parser.error(
            f"unrecognized option {unknown[0]!r}; config fields are set as section.field=value "
            "(e.g. train.epochs=2), anywhere on the line"
        )
    return args


def raw_config_from_args(
    args: argparse.Namespace, config_class: type[PretrainConfig] = PretrainConfig
) -> dict[str, Any]:
    """The raw config a command line describes: --config (or the resumed run's config.yaml) with
    --output-dir, --data-dir and the overrides applied; not validated yet. Needs no torch."""
    overrides = list(args.overrides)
    if args.output_dir is not None:
        overrides.append(f"train.output_dir={json.dumps(args.output_dir)}")
    if args.data_dir is not None:
        overrides.append(f"data.data_dir={json.dumps(args.data_dir)}")
    if args.config is not None:
        raw = read_config_file(args.config)
    elif args.resume is not None:
        if args.resume == "latest":
            if args.output_dir is None:
                raise ValueError(
                    "--resume latest without --config needs --output-dir (the run to continue)"
                )
            source = Path(args.output_dir) / CONFIG_FILE
        else:
            from contrastkit.pipelines import checkpoint as ckpt

            source = ckpt.resolve_checkpoint(args.resume) / CONFIG_FILE
        raw = read_config_file(source)
    else:
        raise ValueError(
            "--config is required (or --resume to continue a run from its saved config)"
        )
    return apply_overrides(raw, overrides, config_class)


def config_from_args(
    args: argparse.Namespace, config_class: type[PretrainConfig] = PretrainConfig
) -> PretrainConfig:
    """The config a command line describes, validated: first the checks that need no torch
    (`check_raw_config`), then the whole config (which loads the method registry)."""
    raw = raw_config_from_args(args, config_class)
    check_raw_config(raw, config_class)
    return config_from_dict(raw, config_class)


def run_command(task: TrainingTask, argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]), run `task`, and return the exit status (see
    HELP_EPILOG): 0 done or stopped by a signal after a checkpoint, 1 non-finite loss, 2 bad
    input (one line `<command>: error: ...` on stderr)."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_command_line(build_parser(task), argv)
    return _run(task.command, task.config_class, lambda: task, args)


def run_task_command(command: TaskCommand, argv: Sequence[str] | None = None) -> int:
    """`run_command` for a task not imported yet: the command line is parsed and the config
    checked first, without torch; the task's module is imported only after that (or for --help).
    """
    argv = sys.argv[1:] if argv is None else argv
    args = parse_command_line(_parser(command.command, None, None, add_help=False), argv)
    if args.help:
        build_parser(command.load_task()).print_help()
        return EXIT_OK
    return _run(command.command, command.config_class, command.load_task, args)


def _run(
    command: str,
    config_class: type[PretrainConfig],
    load_task: Callable[[], TrainingTask],
    args: argparse.Namespace,
) -> int:
    """Check the config, then (only then) import and run the task; the exit status."""
    is_main = int(os.environ.get("RANK", "0")) == 0
    try:
        with _exit_at_once_on_signals(command):
            config = config_from_args(args, config_class)  # torch-free checks first
            if args.print_config:
                # Fields filled from the data (a tabular backbone's in_features) are not known.
                if is_main:
                    print(config_to_yaml(config), end="")
                return EXIT_OK
            task = load_task()
    except (ValueError, OSError) as error:
        return _bad_input(command, error)

    from contrastkit.pipelines.training.accelerator import leave_process_group
    from contrastkit.pipelines.training.loop import run_training
    from contrastkit.pipelines.training.task import NonFiniteLossError

    try:
        result = run_training(config, task, resume=args.resume)
    except NonFiniteLossError as error:
        print(f"{command}: stopped: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except (ValueError, OSError) as error:
        return _bad_input(command, error)
    except KeyboardInterrupt:
        # Ctrl-C before the signal handlers are installed (while the data loads): no step ran.
        print(f"{command}: interrupted before training started; no checkpoint", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        leave_process_group(wait=False)
    if is_main:
        print(f"{command}: {_ending(result, command)}", file=sys.stderr)
    return EXIT_OK


@contextlib.contextmanager
def _exit_at_once_on_signals(command: str) -> Iterator[None]:
    """While the command starts (config checks, the task's imports), SIGINT / SIGTERM / SIGHUP
    end the process at once with one line and status 128 + signal: nothing has been written
    yet, and a KeyboardInterrupt raised inside a half-done import (torch, numpy) can surface as
    any error (a RecursionError in numpy's lazy attributes, seen in tests), never a clean one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        os.write(2, f"{command}: {name} while starting; stopped, nothing was written\n".encode())
        os._exit(128 + signum)

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
            previous[signum] = signal.signal(signum, leave)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _bad_input(command: str, error: ValueError | OSError) -> int:
    """Print `error` as one line naming what to fix; the bad-input exit status."""
    if isinstance(error, OSError) and error.errno is not None:
        message = describe_os_error(error)  # a raw OSError: its reason and the path it names
    else:
        message = str(error)  # ours (ValueError, FileNotFoundError): already names the path
    print(f"{command}: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _ending(result: TrainingResult, command: str) -> str:
    """How a run that returned ended, in one line (after the command's name)."""
    if result.stopped_by is None:
        return f"done, {result.step} steps; checkpoint {result.checkpoint}"
    stopped = f"stopped by {result.stopped_by} at step {result.step}"
    if result.checkpoint is None:
        return f"{stopped}, before any checkpoint; start it again with the same command"
    resume = f"{command} --resume latest --output-dir {shlex.quote(str(result.run_dir))}"
    return (
        f"{stopped}; checkpoint {result.checkpoint}; continue with: {resume} (launched as before)"
    )
