"""Helpers the objectives tests share: seeded inputs and i-Mix targets, the value-and-gradient check,
and the harness that runs a function on two gloo processes and compares it with one process.

The loop-by-hand losses themselves live in objectives_reference.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

WORLD = 2  # gloo processes in the distributed tests


# ---- inputs and i-Mix targets ----


def float64_inputs(seed: int, *shapes: tuple[int, ...]) -> list[Tensor]:
    """Standard-normal float64 leaves that require grad, one per shape, from one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_()
        for shape in shapes
    ]


def soft_targets(seed: int, n: int) -> Tensor:
    """(n, n) float64 soft labels: rows sum to 1, some exact zeros, a heavier diagonal."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.rand(n, n, generator=generator, dtype=torch.float64)
    weights[weights < 0.3] = 0  # exact zeros, so the zero handling is exercised
    weights[torch.arange(n), torch.arange(n)] += 0.5
    return weights / weights.sum(dim=1, keepdim=True)


def index_targets(seed: int, n: int) -> Tensor:
    """(n,) int64 positives in [0, n), repeats allowed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (n,), generator=generator)


TARGET_KINDS = ["none", "index", "soft"]


def make_targets(kind: str, seed: int, n: int) -> Tensor | None:
    """i-Mix targets of one of TARGET_KINDS: None, `index_targets` or `soft_targets`."""
    if kind == "none":
        return None
    if kind == "index":
        return index_targets(seed, n)
    if kind == "soft":
        return soft_targets(seed, n)
    raise ValueError(f"unknown target kind {kind!r}")


def assert_same_value_and_grad(ours: Tensor, theirs: Tensor, inputs: list[Tensor]) -> None:
    """Equal values (1e-10) and equal gradients w.r.t. `inputs` (1e-9); both graphs are kept.

    An input that `theirs` does not use must get no gradient, or an all-zero one, from `ours`.
    """
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    ours_grads = torch.autograd.grad(ours, inputs, allow_unused=True, retain_graph=True)
    theirs_grads = torch.autograd.grad(theirs, inputs, allow_unused=True, retain_graph=True)
    for a, b in zip(ours_grads, theirs_grads, strict=True):
        if b is None:
            assert a is None or torch.count_nonzero(a) == 0
        else:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


# ---- half precision and autocast ----


def saturated_pairs(seed: int, n: int = 8, d: int = 16) -> dict[str, tuple[Tensor, Tensor]]:
    """(n, d) float32 view pairs whose cosines saturate: identical or opposite rows everywhere, and
    random views (distinct, or equal), for the half-precision tests at cold temperatures."""
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(d, generator=generator)
    same = v.expand(n, d).clone()
    random = torch.randn(n, d, generator=generator)
    return {
        "identical": (same, same.clone()),
        "opposite": (same, -same),
        "random": (random, torch.randn(n, d, generator=generator)),
        "random_equal_views": (random, random.clone()),
    }


def assert_autocast_keeps_float32(
    all_losses: Callable[[Tensor, Tensor, Tensor], dict[str, Tensor]],
    seed: int,
    n: int = 8,
    d: int = 16,
    bank_rows: int = 32,
    atol: float = 1e-5,
) -> None:
    """`all_losses(a, b, bank)` on the bf16 outputs of a Linear inside a CPU autocast region must be
    float32 and equal (within `atol`) to the losses of the same values in float32 outside it."""
    generator = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(d, d)
    x1, x2 = torch.randn(n, d, generator=generator), torch.randn(n, d, generator=generator)
    bank = torch.randn(bank_rows, d, generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = layer(x1), layer(x2)
        assert a.dtype == torch.bfloat16  # autocast is really on
        inside = all_losses(a, b, bank)
    outside = all_losses(a.float(), b.float(), bank)
    for name, value in inside.items():
        assert value.dtype == torch.float32, name
        torch.testing.assert_close(value, outside[name], rtol=0, atol=atol, msg=name)


# ---- two gloo ranks against one process ----
#
# Each rank computes its loss on its share of the batch and backpropagates; loss and parameter
# gradients are then averaged over ranks as DDP does (`ddp_average`). The gradient reaching a
# rank's *inputs* is that of the SUM of the rank losses when the loss gathers or all-reduces with
# gradient (world_size times the full-batch one), see test_objectives_distributed.py.


def float64_sampler(generator: torch.Generator) -> Callable[..., Tensor]:
    """`rand(*shape)`: standard-normal float64 tensors drawn from `generator` in call order."""

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    return rand


def _per_rank_soft_targets(rand: Callable[..., Tensor], n_per_rank: int) -> Tensor:
    """(WORLD, n, n): each rank's own i-Mix soft labels over its local batch."""
    blocks = []
    for _ in range(WORLD):
        block = rand(n_per_rank, n_per_rank).exp()
        blocks.append(block / block.sum(dim=1, keepdim=True))
    return torch.stack(blocks)


def _per_rank_index_targets(generator: torch.Generator, n_per_rank: int) -> Tensor:
    """(WORLD, n): each rank's own i-Mix index labels (a permutation of its local batch)."""
    return torch.stack([torch.randperm(n_per_rank, generator=generator) for _ in range(WORLD)])


def full_batch_targets(soft: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """The per-rank targets as one process sees them: block-diagonal soft, offset indices."""
    n_per_rank = index.shape[1]
    offset = torch.cat([index[r] + r * n_per_rank for r in range(WORLD)])
    return torch.block_diag(*soft), offset


def linear_imix_data(n_per_rank: int, in_dim: int, dim: int, bank_rows: int) -> dict[str, Tensor]:
    """Seeded float64 data for in-batch losses behind one linear layer, for WORLD ranks.

    x1, x2 (WORLD * n_per_rank, in_dim): two views of the full batch; weight (dim, in_dim) and
    bias (dim,): the layer (`linear_layer`); bank (bank_rows, dim): a queue or support set;
    soft (WORLD, n, n) and index (WORLD, n): each rank's own i-Mix targets (`full_batch_targets`).
    """
    generator = torch.Generator().manual_seed(0)
    rand = float64_sampler(generator)
    n = WORLD * n_per_rank
    soft = _per_rank_soft_targets(rand, n_per_rank)
    return {
        "x1": rand(n, in_dim),
        "x2": rand(n, in_dim),
        "weight": rand(dim, in_dim),
        "bias": rand(dim),
        "bank": rand(bank_rows, dim),
        "soft": soft,
        "index": _per_rank_index_targets(generator, n_per_rank),
    }


def linear_layer(data: dict[str, Tensor]) -> torch.nn.Linear:
    """A float64 nn.Linear holding copies of data["weight"] (out, in) and data["bias"] (out,)."""
    weight = data["weight"]
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(data["bias"])
    return layer


def run_linear_losses(
    losses: Callable[..., dict[str, Tensor]], x1: Tensor, x2: Tensor, data: dict[str, Tensor], *args
) -> dict[str, dict[str, Tensor]]:
    """Per loss of `losses(x1, x2, layer, data, *args)` (a dict name -> scalar), one backward each
    through a fresh `linear_layer(data)`: the loss, the parameter gradients (weight, bias) and the
    input gradients (x1, x2; None where the loss does not use that input)."""
    results = {}
    for name in losses(x1, x2, linear_layer(data), data, *args):
        layer = linear_layer(data)
        a, b = x1.clone().requires_grad_(), x2.clone().requires_grad_()
        loss = losses(a, b, layer, data, *args)[name]
        loss.backward()
        results[name] = {
            "loss": loss.detach(),
            "weight": layer.weight.grad,
            "bias": layer.bias.grad,
            "x1": a.grad,
            "x2": b.grad,
        }
    return results


def _run_rank(rank: int, worker: Callable[[int], Any], init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.save(worker(rank), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_on_gloo_ranks(worker: Callable[[int], Any], tmp_path: Path) -> list[Any]:
    """Run `worker(rank)` in WORLD gloo processes; return what each returned, in rank order.

    `worker` must be a module-level function (the processes are spawned, so it is pickled).
    """
    mp.spawn(
        _run_rank, args=(worker, str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True
    )
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]


def ddp_average(results: dict[str, dict[str, Tensor]], keys: Iterable[str]) -> None:
    """In place, inside a worker: each entry's `keys` (those present and not None) become their
    mean over ranks, what DDP does to parameter gradients (and a logged loss)."""
    keys = tuple(keys)
    for entry in results.values():
        for key in keys:
            if entry.get(key) is not None:
                dist.all_reduce(entry[key])
                entry[key] /= WORLD


def assert_ranks_match_full_batch(
    ranks: list[dict[str, dict[str, Tensor]]],
    full: dict[str, dict[str, Tensor]],
    averaged_keys: Iterable[str],
    input_keys: Iterable[str],
    rows_per_rank: int,
    batch_dim: int = 0,
) -> None:
    """Every loss of `full` (one process, full batch) against each rank's results.

    averaged_keys (those `full[name]` has): after `ddp_average`, equal to the full-batch value; a
    None (a parameter the loss does not use) must be None on the ranks too. input_keys: the
    gradient of the rank's own rows (along `batch_dim`), divided by WORLD, equals the full-batch
    gradient of those rows (None if None there).
    """
    averaged_keys, input_keys = tuple(averaged_keys), tuple(input_keys)
    for name, expected in full.items():
        for rank, result in enumerate(ranks):
            got = result[name]
            for key in averaged_keys:
                if key not in expected:
                    continue
                if expected[key] is None:
                    assert got[key] is None, f"{name} {key}"
                    continue
                torch.testing.assert_close(got[key], expected[key], msg=f"{name} {key}")
            for key in input_keys:
                if expected[key] is None:
                    assert got[key] is None, f"{name} d{key}"
                    continue
                mine = expected[key].narrow(batch_dim, rank * rows_per_rank, rows_per_rank)
                torch.testing.assert_close(got[key] / WORLD, mine, msg=f"{name} d{key} rank {rank}")
