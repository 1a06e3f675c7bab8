"""The documentation site's examples run as written, so they cannot rot.

Every ```python block of the hand-written pages under docs/ (getting started, one page per
method, data formats, ...) is executed; bash blocks are not run, but every repository file they
name must exist. Every method of the pipeline has its page. `nox -s docs` builds the site itself.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
METHODS_DIR = ROOT / "packages" / "pipelines" / "src" / "contrastkit" / "pipelines" / "methods"
# Hand-written pages; docs/results/ holds the studies' own reports (their code is the study's).
PAGES = sorted([*DOCS.glob("*.md"), *(DOCS / "methods").glob("*.md"), *(DOCS / "api").glob("*.md")])


def _blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(), re.S | re.M)


PYTHON_BLOCKS = [
    pytest.param(page, index, id=f"{page.relative_to(DOCS)}-{index}")
    for page in PAGES
    for index in range(len(_blocks(page, "python")))
]


@pytest.mark.parametrize(("page", "index"), PYTHON_BLOCKS)
def test_python_example_runs(page: Path, index: int) -> None:
    code = _blocks(page, "python")[index]
    exec(compile(code, f"{page.relative_to(ROOT)} python block {index}", "exec"), {})


def test_every_method_has_a_page_with_a_runnable_example() -> None:
    methods = sorted(p.stem for p in METHODS_DIR.glob("*.py") if p.stem not in ("__init__", "base"))
    pages = sorted(p.stem for p in (DOCS / "methods").glob("*.md") if p.stem != "index")
    assert pages == methods, f"docs/methods/ pages {pages} != method modules {methods}"
    without = [m for m in methods if not _blocks(DOCS / "methods" / f"{m}.md", "python")]
    assert not without, f"method pages without a python example: {without}"
    assert _blocks(DOCS / "getting-started.md", "python"), "getting-started.md has no example"


def test_bash_commands_name_files_that_exist() -> None:
    named = []
    for page in PAGES:
        for block in _blocks(page, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #", 1)[0].strip()
                if not line or line.startswith("#"):
                    continue
                for word in shlex.split(line):
                    if word.startswith(("packages/", "./packages/", "bench/", "docs/")):
                        named.append((page.name, re.sub(r"\[\w+\]$", "", word)))  # no [extra]
    assert named, "the docs' bash blocks name no repository files"
    missing = [(page, w) for page, w in named if not (ROOT / w).exists()]
    assert not missing, f"docs commands name missing files: {missing}"


def test_the_reference_hook_reads_every_method_class_attribute() -> None:
    """The configuration reference reads the methods' class attributes from their source (the
    docs build has no torch): the names it finds declared in base.py are PretrainMethod's
    ClassVars as Python sees them, and each method's values are its class's own."""
    import importlib.util
    import typing

    from contrastkit.pipelines.methods import METHODS, PretrainMethod

    spec = importlib.util.spec_from_file_location(
        "ck_config_reference", DOCS / "hooks" / "ck_config_reference.py"
    )
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    class_vars = {
        name
        for name, hint in typing.get_type_hints(PretrainMethod).items()
        if typing.get_origin(hint) is typing.ClassVar
    }
    assert hook.declared_class_vars(ROOT) == class_vars
    rows = {row["name"]: row for row in hook.method_rows(ROOT)}
    assert set(rows) == set(METHODS)
    for name, row in rows.items():
        for attribute in class_vars & set(row):
            assert row[attribute] == getattr(METHODS[name], attribute), (name, attribute)
