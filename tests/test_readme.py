"""The root README's examples run as written, and every file its commands name exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_example_runs(index: int) -> None:
    exec(compile(_blocks("python")[index], f"README.md python block {index}", "exec"), {})


def test_bash_commands_name_files_that_exist() -> None:
    named = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            for word in shlex.split(line):
                if word.startswith(("packages/", "./packages/", "bench/")) and "=" not in word:
                    named.append(word)
    assert named, "the README's bash blocks name no repository files"
    missing = [w for w in named if not (ROOT / w).exists()]
    assert not missing, f"README commands name missing files: {missing}"
