"""Every whole Python example of this package's README runs as written (so the README cannot
rot). Fragments (blocks without an import, such as the one that shows `pretrained=True`, which
would download weights) are not programs and are left out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = [
    block
    for block in re.findall(r"```python\n(.*?)```", README, re.S)
    if re.search(r"^(import|from) ", block, re.M)
]


def test_the_readme_has_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_example_runs(index: int) -> None:
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {})
