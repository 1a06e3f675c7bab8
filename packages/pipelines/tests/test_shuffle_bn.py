"""MoCo's shuffle-BN across two gloo processes (CPU) equals a one-process emulation written by hand.

Each rank runs MoCo (a BatchNorm MLP backbone and a BatchNorm projection head) on its half of a
global batch. The emulation draws the same permutation of the global key batch (from the
method's `key_seed`), splits it into the per-process chunks, runs the key encoder on each chunk
as a sequence of Linear / BatchNorm1d (train mode: batch mean, biased variance) / ReLU written out
by hand, and puts every key back at its sample's place. The ranks' keys (read from the queue,
which holds both ranks' keys in rank order), losses and the key encoder's BatchNorm running
statistics must match it; keys normalised in each rank's own batch (no shuffle) must not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from pretrain_helpers import tiny_tabular_config
from torch import Tensor, nn

from contrastkit.backbones import create_backbone
from contrastkit.pipelines.config import config_from_dict
from contrastkit.pipelines.methods import build_method
from contrastkit.pipelines.methods.moco import MoCo

WORLD, N, FEATURES, WIDTH, QUEUE = 2, 4, 5, 8, 16
TEMPERATURE = 0.2  # MoCo's default_temperature
TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}  # float64 model; the queue stores float32-rounded keys
# name -> (method overrides, steps): the plain method over two steps (two permutations, running
# statistics updated twice), symmetric MoCo with both views' keys in one shuffled forward, and
# with one shuffled forward per view.
SCENARIOS = {
    "plain": ({}, 2),
    "symmetric": ({"symmetric": True}, 1),
    "symmetric-separate": ({"symmetric": True, "separate_forwards": True}, 1),
}


def _moco(overrides: dict) -> MoCo:
    """The same float64 MoCo on every rank and in the emulation (weights from the global seed)."""
    model = {
        "backbone_kwargs": {"width": WIDTH, "num_layers": 1},
        "projection_hidden_dim": WIDTH,
        "projection_dim": 4,
    }
    method = {"name": "moco", "queue_size": QUEUE, **overrides}
    config = config_from_dict(tiny_tabular_config(Path("unused"), method=method, model=model))
    torch.manual_seed(0)
    backbone = create_backbone("mlp", in_features=FEATURES, width=WIDTH, num_layers=1)
    built = build_method(config, backbone).double().train()
    assert isinstance(built, MoCo)
    return built


def _global_views(step: int) -> tuple[Tensor, Tensor]:
    """(WORLD * N, FEATURES) views 1 and 2 of the global batch; rank r holds rows r*N:(r+1)*N."""
    generator = torch.Generator().manual_seed(10 + step)
    x = torch.randn(WORLD * N, FEATURES, generator=generator, dtype=torch.float64)
    noise = torch.randn(2, WORLD * N, FEATURES, generator=generator, dtype=torch.float64)
    return x + 0.3 * noise[0], x + 0.3 * noise[1]


def _running_stats(method: MoCo) -> dict[str, Tensor]:
    assert method.teacher is not None
    return {
        name: value.clone()
        for name, value in method.teacher.state_dict().items()
        if "running_" in name or "num_batches_tracked" in name
    }


def _record_inputs(module: nn.Module) -> list[Tensor]:
    """A list that gets a copy of `module`'s first input at every call."""
    seen: list[Tensor] = []
    module.register_forward_hook(lambda _module, args, _output: seen.append(args[0].clone()))
    return seen


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        mine = slice(rank * N, (rank + 1) * N)
        results = {}
        for name, (overrides, steps) in SCENARIOS.items():
            method = _moco(overrides)
            assert method.teacher is not None
            encoded = _record_inputs(method.teacher)
            results[name] = []
            for step in range(steps):
                view1, view2 = _global_views(step)
                out = method([view1[mine], view2[mine]], step=step)
                view1_queue = method.view1_queue
                results[name].append(
                    {
                        "loss": out.loss.detach(),
                        "encoded": list(encoded),
                        "queue": method.queue.keys.clone(),
                        "view1_queue": None if view1_queue is None else view1_queue.keys.clone(),
                        "stats": _running_stats(method),
                    }
                )
                encoded.clear()
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------- the emulation by hand
def _key_encoder_by_hand(
    teacher: nn.Module, x: Tensor, stats: list[dict[str, Tensor]]
) -> tuple[Tensor, list[dict[str, Tensor]]]:
    """The key encoder's projection of one BatchNorm batch x (n, FEATURES), train mode, and the
    running statistics of its BatchNorm layers (one dict each, in order) after this batch."""
    layers = [m for m in teacher.modules() if not list(m.children())]
    assert {type(m) for m in layers} == {nn.Linear, nn.BatchNorm1d, nn.ReLU}, layers
    updated, norms = [], iter(stats)
    for layer in layers:
        if isinstance(layer, nn.Linear):
            x = x @ layer.weight.T + (0 if layer.bias is None else layer.bias)
        elif isinstance(layer, nn.ReLU):
            x = x.clamp_min(0)
        else:
            mean, var = x.mean(dim=0), ((x - x.mean(dim=0)) ** 2).mean(dim=0)
            n, m, old = x.shape[0], layer.momentum, next(norms)
            updated.append(
                {
                    "running_mean": (1 - m) * old["running_mean"] + m * mean,
                    # PyTorch keeps the unbiased variance as its running estimate.
                    "running_var": (1 - m) * old["running_var"] + m * var * n / (n - 1),
                    "num_batches_tracked": old["num_batches_tracked"] + 1,
                }
            )
            x = (x - mean) / torch.sqrt(var + layer.eps) * layer.weight + layer.bias
    return x, updated


def _moco_loss_by_hand(q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
    """Cross-entropy of [q.k | q.queue] / T with the positive in column 0, rows L2-normalised."""
    q, k, queue = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(queue, dim=1)
    logits = torch.cat([(q * k).sum(dim=1, keepdim=True), q @ queue.T], dim=1) / TEMPERATURE
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))


class _Emulation:
    """One process standing in for WORLD: per-rank key encoder statistics and the shared queues."""

    def __init__(self, method: MoCo) -> None:
        assert method.teacher is not None
        self.method, self.teacher = method, method.teacher.module
        norms = [m for m in self.teacher.modules() if isinstance(m, nn.BatchNorm1d)]
        start = [
            {
                "running_mean": bn.running_mean.clone(),
                "running_var": bn.running_var.clone(),
                "num_batches_tracked": bn.num_batches_tracked.clone(),
            }
            for bn in norms
        ]
        self.stats = [list(start) for _ in range(WORLD)]
        self.queue = method.queue.keys.clone()
        view1_queue = method.view1_queue
        self.view1_queue = None if view1_queue is None else view1_queue.keys.clone()
        self.ptr = 0
        self.encoded: list[list[Tensor]] = [[] for _ in range(WORLD)]

    def shuffled_keys(self, per_rank: list[Tensor], step: int) -> Tensor:
        """Keys of every rank's rows (rank order, (WORLD * m, D)): the global batch permuted with
        the step's permutation, chunk r encoded as rank r's BatchNorm batch, put back in place."""
        everything = torch.cat(per_rank)
        m = per_rank[0].shape[0]
        seed = self.method.key_seed(step)
        permutation = torch.randperm(WORLD * m, generator=torch.Generator().manual_seed(seed))
        # The test only means something if each chunk mixes both ranks' samples.
        for rank in range(WORLD):
            owners = set((permutation[rank * m : (rank + 1) * m] // m).tolist())
            assert owners == set(range(WORLD)), (step, permutation)
        keys = torch.empty(WORLD * m, self.method.embedding_dim, dtype=torch.float64)
        for rank in range(WORLD):
            rows = permutation[rank * m : (rank + 1) * m].tolist()
            chunk = everything[rows]
            self.encoded[rank].append(chunk)
            encoded, self.stats[rank] = _key_encoder_by_hand(self.teacher, chunk, self.stats[rank])
            for position, sample in enumerate(rows):
                keys[sample] = encoded[position]
        return keys

    def enqueue(self, queue: Tensor, keys: Tensor) -> None:
        for row in F.normalize(keys, dim=1):
            queue[self.ptr % QUEUE] = row
            self.ptr += 1

    def step(self, step: int, symmetric: bool, separate: bool) -> list[Tensor]:
        """Rank losses of MoCo's forward number `step`; updates queues and statistics."""
        view1, view2 = _global_views(step)
        ranks = [slice(r * N, (r + 1) * N) for r in range(WORLD)]
        # Queries: each rank's student on its own rows (its own BatchNorm batch, as on the rank).
        student = self.method.encoder
        if not symmetric:
            keys2 = self.shuffled_keys([view2[r] for r in ranks], step)
            losses = [_moco_loss_by_hand(student(view1[r])[1], keys2[r], self.queue) for r in ranks]
            self.enqueue(self.queue, keys2)
            return losses
        if separate:
            keys1 = self.shuffled_keys([view1[r] for r in ranks], step)
            keys2 = self.shuffled_keys([view2[r] for r in ranks], step)
        else:
            both = self.shuffled_keys([torch.cat([view1[r], view2[r]]) for r in ranks], step)
            keys1 = torch.cat([both[2 * r.start : 2 * r.start + N] for r in ranks])
            keys2 = torch.cat([both[2 * r.start + N : 2 * r.stop] for r in ranks])
        losses = []
        for r in ranks:
            if separate:
                q1, q2 = student(view1[r])[1], student(view2[r])[1]
            else:
                q1, q2 = student(torch.cat([view1[r], view2[r]]))[1].chunk(2)
            assert self.view1_queue is not None
            term2 = _moco_loss_by_hand(q2, keys1[r], self.view1_queue)
            losses.append((_moco_loss_by_hand(q1, keys2[r], self.queue) + term2) / 2)
        ptr = self.ptr
        self.enqueue(self.queue, keys2)
        self.ptr = ptr  # the two queues move together
        self.enqueue(self.view1_queue, keys1)
        return losses


def _unshuffled_keys(method: MoCo, step: int) -> Tensor:
    """View-2 keys with each rank's own rows as its BatchNorm batch: what no shuffle would give."""
    assert method.teacher is not None
    stats = [
        {"running_mean": b.running_mean, "running_var": b.running_var, "num_batches_tracked": 0}
        for b in method.teacher.modules()
        if isinstance(b, nn.BatchNorm1d)
    ]
    view2 = _global_views(step)[1]
    return torch.cat(
        [
            _key_encoder_by_hand(method.teacher.module, view2[r * N : (r + 1) * N], stats)[0]
            for r in range(WORLD)
        ]
    )


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_two_process_shuffle_bn_matches_one_process_emulation(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    for name, (overrides, steps) in SCENARIOS.items():
        method = _moco(overrides)
        emulation = _Emulation(method)
        symmetric = bool(overrides.get("symmetric"))
        separate = bool(overrides.get("separate_forwards"))
        assert method.teacher is not None
        norm_names = [n for n, m in method.teacher.named_modules() if isinstance(m, nn.BatchNorm1d)]
        for step in range(steps):
            where = f"{name} step {step}"
            if step == 0 and not symmetric:
                no_shuffle = F.normalize(_unshuffled_keys(method, step), dim=1)
            losses = emulation.step(step, symmetric, separate)
            for rank, result in enumerate(ranks):
                got = result[name][step]
                # Which rows each rank's key encoder saw: its chunk of the permuted global batch.
                assert len(got["encoded"]) == len(emulation.encoded[rank]), where
                for seen, chunk in zip(got["encoded"], emulation.encoded[rank], strict=True):
                    torch.testing.assert_close(seen, chunk, msg=f"{where} rank {rank} input")
                emulation.encoded[rank].clear()
                # Keys (the queue holds both ranks' keys in rank order), loss, running stats.
                torch.testing.assert_close(got["queue"], emulation.queue, **TOLERANCE)
                if symmetric:
                    torch.testing.assert_close(
                        got["view1_queue"], emulation.view1_queue, **TOLERANCE
                    )
                torch.testing.assert_close(got["loss"], losses[rank], **TOLERANCE)
                expected = {
                    f"{prefix}.{key}": value
                    for prefix, bn in zip(norm_names, emulation.stats[rank], strict=True)
                    for key, value in bn.items()
                }
                assert sorted(got["stats"]) == sorted(expected), where
                for key, value in expected.items():
                    torch.testing.assert_close(
                        got["stats"][key], value, **TOLERANCE, msg=f"{where} rank {rank} {key}"
                    )
            if step == 0 and not symmetric:
                # The comparison can fail: per-rank BatchNorm batches (no shuffle) give other keys.
                shuffled = emulation.queue[: WORLD * N]
                assert (shuffled - no_shuffle).abs().max() > 1e-2, where
