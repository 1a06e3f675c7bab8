"""Every random stream one process of a run draws from, captured for its checkpoint and restored on
resume: Python, NumPy, torch (CPU and CUDA), the augment pipeline and the i-Mix generator.

The NumPy state is stored as tensors and plain numbers so that `torch.load(weights_only=True)`
reads it back.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng_state(augment: Any, mix_generator: torch.Generator) -> dict[str, Any]:
    """This process's random state: what `rank_state-{r}.pt` holds besides the running sums.

    augment: the view pipeline (`contrastkit.augment.make_views`), with state_dict().
    """
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "augment": augment.state_dict(),
        "mix_generator": mix_generator.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], augment: Any, mix_generator: torch.Generator) -> None:
    """Put back what `capture_rng_state` captured (CUDA only where this host has it)."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    augment.load_state_dict(state["augment"])
    mix_generator.set_state(state["mix_generator"])
