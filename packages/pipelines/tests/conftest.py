"""Fixtures shared by the pretrain tests (helpers live in pretrain_helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from pretrain_helpers import write_toy_cifar

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The tests run tiny models whose ops take microseconds: with several OpenMP threads they spend
# most of their time spinning in thread barriers (and far more when the machine is busy). One
# thread here, and the same in every subprocess, so in-process and subprocess runs also compute
# bit-identical numbers (the resume tests compare them).
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy_cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A learnable 4-class toy CIFAR-10 (80 train, 40 test images) in the npz folder format."""
    return write_toy_cifar(tmp_path_factory.mktemp("toy_cifar"))


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Every figure the plots package saves, kept for inspection (the PNG is still written)."""
    from contrastkit.pipelines.plots import _figure  # matplotlib only for the tests that draw

    saved: list[Figure] = []
    real_save = _figure.save_png

    def keep(figure: Figure, out_png: str | Path) -> Path:
        saved.append(figure)
        return real_save(figure, out_png)

    monkeypatch.setattr(_figure, "save_png", keep)
    return saved
