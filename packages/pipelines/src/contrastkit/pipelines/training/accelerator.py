"""The Accelerator every run (pretrain, joint, probe) starts with, for the layout the launcher set
up, and the leaving of its process group when the run is over."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from accelerate import Accelerator


def _has_accelerator_device() -> bool:
    device_api = getattr(torch, "accelerator", None)  # torch >= 2.6
    if device_api is not None:
        return bool(device_api.is_available())
    return torch.cuda.is_available()


def make_accelerator(gradient_accumulation_steps: int = 1) -> Accelerator:
    """An Accelerator for the layout `accelerate launch` (or torchrun) set up.

    Mixed precision and the process layout come from `accelerate launch` flags / env variables.
    On a host without a GPU, accelerate only forms a multi-process (gloo) group when told to use the
    CPU; a launcher that started several processes (`accelerate launch --multi_gpu
    --num_processes N`, torchrun) therefore gets cpu=True here instead of N independent runs.
    Pretrain, joint training and the probe all start their runs with it.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = launched and not _has_accelerator_device()
    return Accelerator(gradient_accumulation_steps=gradient_accumulation_steps, cpu=cpu)


def leave_process_group(*, wait: bool) -> None:
    """Destroy the process group, if there is one (a no-op otherwise, so it may run twice).

    wait=True (a run that ended well on every process) first waits for every process: in a probe
    the main process still writes its results and pictures when the others are done, and a process
    that tore its connections down under a peer still at work is how gloo teardowns go wrong.
    wait=False for error paths, where a peer may never arrive.
    """
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
