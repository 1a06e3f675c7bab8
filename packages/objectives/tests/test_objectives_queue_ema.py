"""MemoryQueue against a key-by-key ring buffer; EMA, cosine momentum and MomentumTeacher against their formulas."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from contrastkit.objectives import MemoryQueue, MomentumTeacher, cosine_momentum, ema_update


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


class _RingBuffer:
    """Reference: write keys one at a time, pointer wraps at the end."""

    def __init__(self, initial: torch.Tensor) -> None:
        self.rows = [row.clone() for row in initial]
        self.ptr = 0

    def write(self, keys: torch.Tensor) -> None:
        for row in _unit_rows(keys):
            self.rows[self.ptr] = row
            self.ptr = (self.ptr + 1) % len(self.rows)


def test_initial_keys_are_random_unit_rows_and_seeded():
    queue = MemoryQueue(64, 8)
    torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(64))
    assert queue.keys.std() > 0.1  # not constant
    assert queue.ptr.item() == 0 and queue.ptr.dtype == torch.long
    torch.testing.assert_close(MemoryQueue(64, 8).keys, queue.keys)  # same seed, same rows
    assert not torch.equal(MemoryQueue(64, 8, seed=1).keys, queue.keys)


@pytest.mark.parametrize("batches", [[3, 3, 3, 3], [5, 5], [2, 7, 1, 4], [12], [4, 11, 6], [1] * 9])
def test_enqueue_matches_key_by_key_ring_buffer(batches):
    size, dim = 5, 3
    queue = MemoryQueue(size, dim)
    reference = _RingBuffer(queue.keys)
    generator = torch.Generator().manual_seed(sum(batches))
    for batch in batches:
        keys = torch.randn(batch, dim, generator=generator) * 3
        queue.enqueue(keys)
        reference.write(keys)
        torch.testing.assert_close(queue.keys, torch.stack(reference.rows))
        assert queue.ptr.item() == reference.ptr


@pytest.mark.parametrize("batches", [[3, 3, 3, 3], [2, 7, 1, 4], [12], [1] * 9])
def test_tracked_labels_follow_their_keys(batches):
    """Each label lands in its key's row: checked against the key-by-key ring buffer, with the
    key itself carrying its label (its first coordinate), and -1 for rows never written."""
    size = 5
    queue = MemoryQueue(size, 3, track_labels=True)
    assert queue.labels is not None and queue.labels.tolist() == [-1] * size
    reference = _RingBuffer(queue.keys)
    written, row = [-1] * size, 0  # labels written one at a time, like the reference's keys
    next_label = 0
    for batch in batches:
        labels = torch.arange(next_label, next_label + batch)
        keys = torch.stack([labels.float() + 1, torch.ones(batch), torch.zeros(batch)], dim=1)
        queue.enqueue(keys, labels.to(torch.int32))  # any integer dtype, stored as int64
        reference.write(keys)
        for label in labels.tolist():
            written[row], row = label, (row + 1) % size
        next_label += batch
        assert queue.labels.dtype == torch.long and queue.labels.tolist() == written
        torch.testing.assert_close(queue.keys, torch.stack(reference.rows))
    # The key in each written row is the one enqueued with that row's label.
    for row, label in enumerate(written):
        if label >= 0:
            torch.testing.assert_close(
                queue.keys[row], _unit_rows(torch.tensor([[label + 1.0, 1.0, 0.0]]))[0]
            )
    assert set(queue.state_dict()) == {"keys", "ptr", "labels"}
    assert "track_labels=True" in repr(queue)


def test_labels_are_required_exactly_when_tracked():
    keys = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"track_labels=True\): enqueue\(keys, labels\) needs"):
        MemoryQueue(4, 3, track_labels=True).enqueue(keys)
    with pytest.raises(ValueError, match="track_labels=False: enqueue\\(keys\\) takes no labels"):
        MemoryQueue(4, 3).enqueue(keys, torch.zeros(2, dtype=torch.long))
    tracked = MemoryQueue(4, 3, track_labels=True)
    with pytest.raises(ValueError, match=r"labels must be a \(2,\) tensor, got \(3,\)"):
        tracked.enqueue(keys, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must be a \(2,\) tensor, got list"):
        tracked.enqueue(keys, [0, 1])  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"labels must be an integer tensor, got dtype torch\.float32"
    ):
        tracked.enqueue(keys, torch.zeros(2))
    with pytest.raises(TypeError, match="track_labels must be a bool, got 1"):
        MemoryQueue(4, 3, track_labels=1)  # type: ignore[arg-type]
    assert tracked.labels is not None and tracked.labels.tolist() == [-1] * 4  # nothing written


def test_enqueue_detaches_and_casts():
    queue = MemoryQueue(4, 2)
    keys = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    queue.enqueue(keys.to(torch.bfloat16))
    assert not queue.keys.requires_grad and queue.keys.dtype == torch.float32
    assert queue.forward() is queue.keys


def test_state_dict_round_trip_resumes_identically():
    generator = torch.Generator().manual_seed(0)
    original = MemoryQueue(10, 4)
    for _ in range(3):
        original.enqueue(torch.randn(4, 4, generator=generator))
    resumed = MemoryQueue(10, 4, seed=123)
    assert set(original.state_dict()) == {"keys", "ptr"}
    resumed.load_state_dict(original.state_dict())
    assert torch.equal(resumed.keys, original.keys) and resumed.ptr.item() == original.ptr.item()
    more = torch.randn(7, 4, generator=generator)
    original.enqueue(more)
    resumed.enqueue(more)
    assert torch.equal(resumed.keys, original.keys) and resumed.ptr.item() == original.ptr.item()


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def test_ema_update_matches_formula_parameters_only():
    torch.manual_seed(0)
    teacher, student = _mlp(), _mlp()
    student(torch.randn(8, 4))  # moves the student's BatchNorm running stats
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_state = student.state_dict()
    ema_update(teacher, student, 0.9)
    parameter_names = {name for name, _ in teacher.named_parameters()}
    for name, value in teacher.state_dict().items():
        if name in parameter_names:
            expected = 0.9 * before[name] + 0.1 * student_state[name]
            torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(value, before[name]), f"buffer {name} changed"


def test_ema_update_extremes_and_mixed_dtypes():
    torch.manual_seed(1)
    teacher, student = _mlp(), _mlp()
    kept = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 1.0)
    for p, k in zip(teacher.parameters(), kept, strict=True):
        assert torch.equal(p, k)
    ema_update(teacher, student, 0.0)
    for p, s in zip(teacher.parameters(), student.parameters(), strict=True):
        assert torch.equal(p, s)
    double_teacher = _mlp().double()
    start = [p.clone() for p in double_teacher.parameters()]
    ema_update(double_teacher, student, 0.5)  # per-tensor fallback path
    for p, t0, s in zip(double_teacher.parameters(), start, student.parameters(), strict=True):
        torch.testing.assert_close(p, 0.5 * t0 + 0.5 * s.double())


def test_ema_update_rejects_mismatched_modules():
    with pytest.raises(ValueError, match="names and shapes"):
        ema_update(nn.Linear(4, 3), nn.Linear(4, 2), 0.9)
    with pytest.raises(ValueError, match="names and shapes"):
        ema_update(_mlp(), nn.Sequential(nn.Linear(4, 6)), 0.9)
    with pytest.raises(ValueError, match="momentum"):
        ema_update(_mlp(), _mlp(), 1.5)


@pytest.mark.parametrize(("base", "final"), [(0.996, 1.0), (0.99, 0.999), (0.5, 0.9)])
def test_cosine_momentum_formula(base, final):
    total = 100
    assert math.isclose(cosine_momentum(0, total, base, final), base)
    assert math.isclose(cosine_momentum(total, total, base, final), final)
    assert math.isclose(cosine_momentum(total // 2, total, base, final), (base + final) / 2)
    values = [cosine_momentum(k, total, base, final) for k in range(total + 1)]
    assert all(b >= a for a, b in itertools.pairwise(values))  # monotone
    if final == 1.0:
        # BYOL paper form: tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2
        for k in (7, 33, 81):
            expected = 1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2
            assert math.isclose(cosine_momentum(k, total, base), expected)


def test_momentum_teacher_is_a_frozen_copy_that_follows_by_ema():
    torch.manual_seed(2)
    student = _mlp()
    teacher = MomentumTeacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    x = torch.randn(5, 4)
    teacher.eval()
    student.eval()
    torch.testing.assert_close(teacher(x), student(x))
    assert not teacher.training and teacher.module.training is False
    teacher.train()
    assert teacher.module.training  # mode follows .train()/.eval(), not forced
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in teacher.parameters()]
    teacher.update(student, 0.75)
    for p, b, s in zip(teacher.parameters(), before, student.parameters(), strict=True):
        torch.testing.assert_close(p, 0.75 * b + 0.25 * s)
    state = teacher.state_dict()
    assert "module.0.weight" in state and "module.1.running_mean" in state
    fresh = MomentumTeacher(_mlp())
    fresh.load_state_dict(state)
    for a, b in zip(fresh.parameters(), teacher.parameters(), strict=True):
        assert torch.equal(a, b)


def test_momentum_teacher_rejects_non_module():
    with pytest.raises(ValueError, match="student"):
        MomentumTeacher(torch.zeros(3))
