"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    if not README.is_file():
        return []
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_an_example_for_each_objective():
    if not README.is_file():
        pytest.skip("README.md is not next to the tests (installed from an sdist?)")
    code = "\n".join(_python_blocks())
    for name in (
        "nt_xent_loss",
        "npair_loss",
        "moco_loss",
        "ISDLoss",
        "byol_loss",
        "imix_mixup",
        "imix_cutmix",
        "simsiam_loss",
        "BarlowTwinsLoss",
        "vicreg_loss",
        "DINOLoss",
        "dino_loss",
        "SwAVLoss",
        "swav_loss",
        "sinkhorn_knopp",
        "mocov3_loss",
        "NNCLRLoss",
        "supcon_loss",
    ):
        assert name in code, name


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_example_runs(index, capsys):
    block = _python_blocks()[index]
    exec(compile(block, f"README.md block {index}", "exec"), {"__name__": "readme_example"})
    assert "loss" in capsys.readouterr().out
