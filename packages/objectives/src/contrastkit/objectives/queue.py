"""MemoryQueue: the FIFO ring buffer of past keys that MoCo and ISD use as negatives / anchor points.

Its contents and write pointer (and, when it tracks them, the keys' labels) are buffers, so they
are in the state_dict and a resumed run continues with the same queue.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastkit.objectives._validation import NORM_EPS, check_count, check_embeddings
from contrastkit.objectives.distributed import all_gather_no_grad


class MemoryQueue(nn.Module):
    """A FIFO queue of `size` unit-norm keys of dimension `dim`.

    Buffers (all in `state_dict`): `keys` (size, dim) float32, starting as random unit rows;
    `ptr` () int64, the row the next key is written to; with `track_labels=True` also `labels`
    (size,) int64, the class of each row's key as given to `enqueue`, -1 for the random initial
    rows (e.g. NNCLR's nearest-neighbour accuracy reads them). Move it with `.to(device)` like any
    module.

    `seed` fixes the random initial rows independently of the global RNG, so every rank of a
    distributed run starts with the same queue.
    """

    keys: Tensor
    ptr: Tensor
    labels: Tensor | None

    def __init__(self, size: int, dim: int, *, seed: int = 0, track_labels: bool = False) -> None:
        super().__init__()
        self.size = check_count("size", size, 1)
        self.dim = check_count("dim", dim, 1)
        if not isinstance(track_labels, bool):
            raise TypeError(f"track_labels must be a bool, got {track_labels!r}")
        self.track_labels = track_labels
        generator = torch.Generator().manual_seed(check_count("seed", seed, 0))
        initial = torch.randn(size, dim, generator=generator)
        initial = initial / initial.norm(dim=1, keepdim=True).clamp_min(NORM_EPS)
        self.register_buffer("keys", initial)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        if track_labels:
            self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        else:
            self.labels = None

    @torch.no_grad()
    def enqueue(self, keys: Tensor, labels: Tensor | None = None) -> None:
        """Write `keys` (B, dim), detached and L2-normalised, over the oldest rows.

        Any B >= 1 works: the write wraps around the end of the buffer, and if more than `size`
        keys arrive at once only the newest `size` are kept. Under torch.distributed the keys of
        all ranks are first all-gathered (rank order; every rank must pass the same B), so every
        rank holds the same queue. The pointer stays on the device: no host sync.

        labels: (B,) integer classes of the keys, written to the same rows of `labels`; required
        by a queue made with `track_labels=True` and refused by one without (gathered like the
        keys).
        """
        check_embeddings("keys", keys, f"(B, {self.dim})")
        if keys.shape[1] != self.dim:
            raise ValueError(
                f"keys must have shape (B, {self.dim}) to match the queue dim, got {tuple(keys.shape)}"
            )
        if self.track_labels != (labels is not None):
            raise ValueError(
                "this queue tracks labels (track_labels=True): enqueue(keys, labels) needs them"
                if self.track_labels
                else "this queue was made with track_labels=False: enqueue(keys) takes no labels"
            )
        if labels is not None:
            if not isinstance(labels, Tensor) or labels.shape != (keys.shape[0],):
                shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
                raise ValueError(f"labels must be a ({keys.shape[0]},) tensor, got {shape}")
            if (
                labels.dtype.is_floating_point
                or labels.dtype.is_complex
                or labels.dtype == torch.bool
            ):
                raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
        keys = all_gather_no_grad(keys.detach())
        keys = keys.to(device=self.keys.device, dtype=torch.float32)
        keys = keys / keys.norm(dim=1, keepdim=True).clamp_min(NORM_EPS)
        total = keys.shape[0]
        kept = min(total, self.size)
        # Writing all `total` keys one by one from ptr would leave the last `kept` of them at
        # rows ptr + (total - kept) + j (mod size); write just those.
        rows = (self.ptr + (total - kept) + torch.arange(kept, device=self.keys.device)) % self.size
        self.keys.index_copy_(0, rows, keys[total - kept :].to(self.keys.dtype))
        if labels is not None and self.labels is not None:
            labels = all_gather_no_grad(labels.detach()).to(self.labels.device, torch.long)
            self.labels.index_copy_(0, rows, labels[total - kept :])
        self.ptr.copy_((self.ptr + total) % self.size)

    def forward(self) -> Tensor:
        """The current keys, (size, dim); the same tensor as the `keys` buffer."""
        return self.keys

    def extra_repr(self) -> str:
        labels = ", track_labels=True" if self.track_labels else ""
        return f"size={self.size}, dim={self.dim}{labels}"
