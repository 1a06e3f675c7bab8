"""Fixtures shared by the pretrain tests (helpers live in pretrain_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pretrain_helpers import write_toy_cifar


@pytest.fixture(scope="session")
def toy_cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A learnable 4-class toy CIFAR-10 (80 train, 40 test images) in the npz folder format."""
    return write_toy_cifar(tmp_path_factory.mktemp("toy_cifar"))
