"""Loss forward + backward at N = settings.loss_n (4096 on the GPU), D = 128: contrastkit against
lightly on the same random inputs (bench/objectives.py's steps).

nt_xent: `nt_xent_loss` vs `lightly.loss.NTXentLoss`. moco: `moco_loss` + `MemoryQueue.enqueue`
over a queue of settings.loss_queue keys vs `NTXentLoss(memory_bank_size=(K, D))`, lightly's
MoCo-style loss with its bank update. Time: the best of settings.loss_repeats calls for both
(CUDA events on the GPU) after a tiny warm-up step and one full call; peak memory: one full call.
"""

from __future__ import annotations

from typing import Any

from _peak_memory import PeakMemory  # bench/ is on sys.path (run.py)
from objectives import make_loss_step, timed_ms  # bench/objectives.py
from settings import Settings


def _one(loss: str, impl: str, settings: Settings) -> tuple[float, float]:
    """(best ms, peak MiB) of `impl`'s forward + backward of `loss`."""
    device = settings.device
    make_loss_step(loss, impl, 8, 64, device)()  # thread pools, kernels, autograd engine
    step = make_loss_step(loss, impl, settings.loss_n, settings.loss_queue, device)
    step()
    with PeakMemory(device) as peak:
        step()
    return timed_ms(step, device, settings.loss_repeats), peak.mib


def loss_vs_lightly(settings: Settings, loss: str) -> dict[str, Any]:
    """One loss, ours and lightly's; raises ImportError without lightly."""
    ours_ms, ours_mib = _one(loss, "contrastkit", settings)
    lightly_ms, lightly_mib = _one(loss, "lightly", settings)
    row: dict[str, Any] = {"n": settings.loss_n, "dim": 128}
    if loss == "moco":
        row["queue"] = settings.loss_queue
    return {
        **row,
        "ours_ms": ours_ms,
        "ours_peak_memory_mib": ours_mib,
        "lightly_ms": lightly_ms,
        "lightly_peak_memory_mib": lightly_mib,
        "lightly_over_ours": lightly_ms / ours_ms,
    }
