"""What check.sh must install before measuring: prints one line per thing that fails to import.

    python bench/device/missing.py run           # wheels.txt's `run` lines to install (name==version)
    python bench/device/missing.py build         # its `build` lines (to build contrastkit)
    python bench/device/missing.py contrastkit   # contrastkit packages that do not import

A module counts as present only if importing it works (a broken install is missing too).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

WHEELS = Path(__file__).resolve().parent / "wheels.txt"
CONTRASTKIT = ("objectives", "augment", "backbones", "pipelines")


def imports(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:
        return False
    return True


def missing_wheels(when: str) -> list[str]:
    """`name==version` of the wheels.txt lines needed `when` ("run" or "build") whose import
    name does not import."""
    specs = []
    for line in WHEELS.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 3 and fields[2] == when and not imports(fields[1]):
            specs.append(fields[0])
    return specs


def missing_contrastkit() -> list[str]:
    """The package folders under packages/ whose contrastkit module does not import."""
    return [name for name in CONTRASTKIT if not imports(f"contrastkit.{name}")]


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) == 2 else ""
    if what not in ("run", "build", "contrastkit"):
        sys.exit("usage: missing.py run|build|contrastkit")
    for name in missing_contrastkit() if what == "contrastkit" else missing_wheels(what):
        print(name)
