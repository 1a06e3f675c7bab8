"""The Accelerator every run (pretrain, joint, probe) starts with, for the layout the launcher set up."""

from __future__ import annotations

import os

import torch
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
