"""`validate_targets=False`: the losses that take i-Mix targets skip the value check, the one host
sync they make, and compute exactly what the checked call computes; shapes and dtypes are still
checked, and the default still refuses bad values."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor

from contrastkit.objectives import (
    byol_loss,
    imix_mixup,
    moco_loss,
    mocov3_loss,
    npair_loss,
    simsiam_loss,
)

N, D, K = 6, 5, 12
g = torch.Generator().manual_seed(0)
A, B, C, E = (torch.randn(N, D, generator=g) for _ in range(4))
QUEUE = torch.randn(K, D, generator=g)
_, SOFT = imix_mixup(torch.randn(N, 3, generator=g), 1.0, torch.Generator().manual_seed(1))
INDEX = torch.randperm(N, generator=g)

# name -> loss(targets, validate_targets)
LOSSES: dict[str, Callable[[Tensor, bool], Tensor]] = {
    "npair": lambda t, v: npair_loss(A, B, 0.2, t, validate_targets=v),
    "moco": lambda t, v: moco_loss(A, B, QUEUE, 0.2, t, validate_targets=v),
    "byol": lambda t, v: byol_loss(A, B, t, validate_targets=v),
    "mocov3": lambda t, v: mocov3_loss(A, B, C, E, 0.2, t, t, validate_targets=v),
    "simsiam": lambda t, v: simsiam_loss(A, B, C, E, t, t, validate_targets=v),
}


@pytest.fixture
def host_reads() -> Iterator[list[str]]:
    """The names of the Tensor methods that read a value back to the host, as they are called."""
    calls: list[str] = []
    originals = {name: getattr(Tensor, name) for name in ("item", "tolist", "__bool__")}

    def counting(name: str) -> Callable[..., object]:
        def call(self: Tensor, *args: object) -> object:
            calls.append(name)
            return originals[name](self, *args)

        return call

    for name in originals:
        setattr(Tensor, name, counting(name))
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(Tensor, name, original)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("targets", [SOFT, INDEX], ids=["soft", "index"])
def test_unchecked_equals_checked_and_reads_nothing_back(
    name: str, targets: Tensor, host_reads: list[str]
) -> None:
    checked = LOSSES[name](targets, True)
    assert host_reads, "the checked call reads its verdict back"
    host_reads.clear()
    unchecked = LOSSES[name](targets, False)
    assert host_reads == []
    assert torch.equal(unchecked, checked)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_the_default_still_refuses_bad_values_and_false_does_not_look(name: str) -> None:
    bad_rows = SOFT * 2  # rows sum to 2
    with pytest.raises(ValueError, match=r"rows summing to 1, got row sums in \[2, 2\]"):
        LOSSES[name](bad_rows, True)
    # Unchecked, the formula is applied to what it was given.
    assert torch.isfinite(LOSSES[name](bad_rows, False))
    out_of_range = torch.full((N,), N)
    with pytest.raises(ValueError, match=rf"index targets must lie in \[0, {N}\)"):
        LOSSES[name](out_of_range, True)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_shapes_and_dtypes_are_checked_either_way(name: str) -> None:
    with pytest.raises(ValueError, match=r"soft targets must have shape \(N, N\)"):
        LOSSES[name](SOFT[:3], False)
    with pytest.raises(ValueError, match=r"targets must be int64 indices .*torch\.bool"):
        LOSSES[name](torch.ones(N, dtype=torch.bool), False)
