"""The command line every training task shares (`contrastkit-pretrain`, `contrastkit-joint`):
--config, --output-dir, --data-dir, --resume, --print-config and section.field=value overrides,
and the exit status a run ends with."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import torch.distributed as dist

from contrastkit.pipelines import checkpoint as ckpt
from contrastkit.pipelines.config import (
    PretrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_yaml,
    read_config_file,
)
from contrastkit.pipelines.run_files import CONFIG_FILE
from contrastkit.pipelines.training.loop import run_training
from contrastkit.pipelines.training.task import NonFiniteLossError, TrainingTask


def build_parser(task: TrainingTask) -> argparse.ArgumentParser:
    """The command line of `task`'s command."""
    parser = argparse.ArgumentParser(
        prog=task.command, description=task.description, epilog=f"Example: {task.example}"
    )
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
        help="config overrides, values parsed as YAML",
    )
    return parser


def config_from_args(
    args: argparse.Namespace, config_class: type[PretrainConfig] = PretrainConfig
) -> PretrainConfig:
    """The config a command line describes: --config (or the resumed run's config.yaml) + overrides."""
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
            source = ckpt.resolve_checkpoint(args.resume) / CONFIG_FILE
        raw = read_config_file(source)
    else:
        raise ValueError(
            "--config is required (or --resume to continue a run from its saved config)"
        )
    return config_from_dict(apply_overrides(raw, overrides, config_class), config_class)


def run_command(task: TrainingTask, argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run `task`, and return the exit status: 0 done, 1 non-finite loss, 2 bad
    input, 128 + signal number when SIGTERM/SIGINT stopped the run (after saving a checkpoint)."""
    command = task.command
    args = build_parser(task).parse_args(argv)
    is_main = int(os.environ.get("RANK", "0")) == 0
    try:
        config = config_from_args(args, task.config_class)
        if args.print_config:
            # Fields filled from the data (a tabular backbone's in_features) are not known yet.
            if is_main:
                print(config_to_yaml(config), end="")
            return 0
        result = run_training(config, task, resume=args.resume)
    except (ValueError, FileNotFoundError) as error:
        print(f"{command}: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"{command}: stopped: {error}", file=sys.stderr)
        return 1
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if result.stopped_by is not None:
        if is_main:
            print(
                f"{command}: stopped by {result.stopped_by} at step {result.step}; "
                f"checkpoint {result.checkpoint}; continue with --resume latest --output-dir {result.run_dir}",
                file=sys.stderr,
            )
        return 128 + int(signal.Signals[result.stopped_by])
    if is_main:
        print(
            f"{command}: done, {result.step} steps; checkpoint {result.checkpoint}",
            file=sys.stderr,
        )
    return 0
