"""Cross-package packaging checks: versions, sibling ranges, namespace layout, declared deps.

These read the source tree, so they hold for every installed combination built from it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["objectives", "augment", "backbones", "pipelines"]
# What each distribution may depend on at run time (DEVELOPERS.md: "may depend on").
ALLOWED_RUNTIME = {
    "objectives": {"torch"},
    "augment": {"torch", "kornia"},
    "backbones": {"torch", "timm"},
}


def _pyproject(name: str) -> dict:
    return tomllib.loads((ROOT / "packages" / name / "pyproject.toml").read_text())


def _version(name: str) -> tuple[int, ...]:
    text = (ROOT / "packages" / name / "src" / "contrastkit" / name / "_version.py").read_text()
    match = re.search(r'__version__\s*=\s*"([0-9.]+)"', text)
    assert match, f"no __version__ in {name}/_version.py"
    return tuple(int(p) for p in match.group(1).split("."))


def _requirement_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower()


def _satisfies(version: tuple[int, ...], spec: str) -> bool:
    """Tiny evaluator for `>=a.b,<c.d` style specifiers (all we use for siblings)."""
    ops = {
        ">=": lambda a, b: a >= b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
    }
    for clause in spec.split(","):
        m = re.fullmatch(r"\s*(>=|<=|<|>)\s*([0-9.]+)\s*", clause)
        assert m, (
            f"unsupported specifier clause {clause!r}: siblings must use ranges like >=0.1,<0.2"
        )
        bound = tuple(int(p) for p in m.group(2).split("."))
        width = max(len(bound), len(version))
        padded = (version + (0,) * width)[:width], (bound + (0,) * width)[:width]
        if not ops[m.group(1)](*padded):
            return False
    return True


def test_satisfies_helper_is_correct() -> None:
    assert _satisfies((0, 1, 0), ">=0.1,<0.2")
    assert not _satisfies((0, 2, 0), ">=0.1,<0.2")
    assert not _satisfies((0, 0, 9), ">=0.1,<0.2")


@pytest.mark.parametrize("name", PACKAGES)
def test_distribution_metadata(name: str) -> None:
    project = _pyproject(name)["project"]
    assert project["name"] == f"contrastkit-{name}"
    assert "version" in project["dynamic"]
    pkg = ROOT / "packages" / name
    for required in (
        "README.md",
        "CHANGELOG.md",
        f"src/contrastkit/{name}/__init__.py",
        f"src/contrastkit/{name}/py.typed",
        f"src/contrastkit/{name}/_version.py",
    ):
        assert (pkg / required).is_file(), f"{name}: missing {required}"
    # contrastkit is a namespace shared by all distributions: no package may own it.
    assert not (pkg / "src" / "contrastkit" / "__init__.py").exists()
    version = ".".join(map(str, _version(name)))
    assert f"## {version}" in (pkg / "CHANGELOG.md").read_text(), (
        f"{name}: CHANGELOG lacks {version}"
    )


@pytest.mark.parametrize("name", sorted(ALLOWED_RUNTIME))
def test_leaf_packages_depend_only_on_what_they_may(name: str) -> None:
    deps = {_requirement_name(r) for r in _pyproject(name)["project"]["dependencies"]}
    assert deps <= ALLOWED_RUNTIME[name], f"{name} depends on {deps - ALLOWED_RUNTIME[name]}"


def test_pipelines_sibling_ranges_admit_current_versions() -> None:
    deps = _pyproject("pipelines")["project"]["dependencies"]
    siblings = {}
    for req in deps:
        name = _requirement_name(req)
        if name.startswith("contrastkit-"):
            assert "==" not in req, f"sibling pinned exactly: {req}"
            siblings[name.removeprefix("contrastkit-")] = req[len(name) :].strip()
    assert set(siblings) == {"objectives", "augment", "backbones"}
    for sibling, spec in siblings.items():
        assert _satisfies(_version(sibling), spec), f"{sibling} {_version(sibling)} outside {spec}"


@pytest.mark.parametrize("name", PACKAGES)
def test_no_source_module_is_over_400_lines(name: str) -> None:
    src = ROOT / "packages" / name / "src"
    long = {
        str(path.relative_to(src)): count
        for path in sorted(src.rglob("*.py"))
        if (count := len(path.read_text().splitlines())) > 400
    }
    assert not long, f"modules over 400 lines (split them at their seams): {long}"
