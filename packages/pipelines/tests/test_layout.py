"""The layout rules of pipelines 0.2, checked on the source: who may import whom, no cycles, and
what importing the package pulls in.

The import graph is read with `ast` from the files (module-level imports only: an import inside a
function or under `if TYPE_CHECKING:` runs later or never, which is how heavy or upward imports
are kept out of import time).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import contrastkit.pipelines

PACKAGE_DIR = Path(contrastkit.pipelines.__file__).resolve().parent
PREFIX = "contrastkit.pipelines"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PREFIX, *parts])


MODULES: dict[str, Path] = {_module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported (not in functions or TYPE_CHECKING)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.append(node)
            elif isinstance(node, ast.If) and not _is_type_checking(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(tree.body)
    return found


def _imports(module: str) -> set[str]:
    """The contrastkit.pipelines modules `module` imports at import time."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in _top_level_imports(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base]) if base else ".".join(anchor)
        for alias in node.names:
            child = f"{base}.{alias.name}"
            targets.add(child if child in MODULES else base)
    return {t for t in targets if t in MODULES and t != module}


GRAPH = {module: _imports(module) for module in MODULES}


def _in(module: str, room: str) -> bool:
    return module == f"{PREFIX}.{room}" or module.startswith(f"{PREFIX}.{room}.")


def _entry_points(module: str) -> bool:
    """pretrain, joint (and its model/report modules) and probe (and its CLI module)."""
    leaf = module.removeprefix(f"{PREFIX}.")
    return leaf.split("_")[0] in ("pretrain", "joint", "probe") and "." not in leaf


def test_the_rooms_exist() -> None:
    for room in ("training", "evaluation", "methods", "config", "data", "plots"):
        assert f"{PREFIX}.{room}" in MODULES, f"missing package {room}/"
    assert f"{PREFIX}.training.loop" in MODULES or any(
        m.startswith(f"{PREFIX}.training.") for m in MODULES
    )


def test_the_graph_reader_sees_real_edges() -> None:
    # A sanity check of the reader itself, on edges that must exist.
    assert f"{PREFIX}.evaluation.inputs" in GRAPH[f"{PREFIX}.evaluation.knn"]
    assert f"{PREFIX}.atomic" in set().union(*GRAPH.values())


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _in(m, "training")))
def test_training_does_not_import_the_tasks(module: str) -> None:
    bad = sorted(t for t in GRAPH[module] if _entry_points(t))
    assert not bad, f"{module} imports {bad}: training/ must not know pretrain, joint or probe"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _in(m, "evaluation")))
def test_evaluation_does_not_import_training(module: str) -> None:
    bad = sorted(t for t in GRAPH[module] if _in(t, "training") or _entry_points(t))
    assert not bad, f"{module} imports {bad}: evaluation/ must not import training/ or the tasks"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize(
    "module",
    [
        "contrastkit.pipelines",
        "contrastkit.pipelines.pretrain",
        "contrastkit.pipelines.joint",
        "contrastkit.pipelines.probe",
    ],
)
def test_importing_does_not_load_matplotlib(module: str) -> None:
    # Nor scikit-learn, TensorBoard, timm or torchvision: each is imported where it is used.
    code = (
        f"import sys, {module}\n"
        "heavy = ('matplotlib', 'sklearn', 'tensorboard', 'timm', 'torchvision')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"importing {module} loaded {out}"


@pytest.mark.parametrize(
    "module",
    [
        "contrastkit.pipelines",
        "contrastkit.pipelines.config",
        "contrastkit.pipelines.methods",
        "contrastkit.pipelines.training.command",
        "contrastkit.pipelines.entry_points",
    ],
)
def test_the_command_line_and_config_import_no_torch(module: str) -> None:
    # What the command line needs to read and check a config, so a config error is answered
    # before torch, accelerate and timm load (seconds each).
    code = (
        f"import sys, {module}\n"
        "heavy = ('torch', 'accelerate', 'timm', 'numpy', 'matplotlib', 'sklearn')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"importing {module} loaded {out}"


def test_public_api_is_small_and_importable() -> None:
    names = contrastkit.pipelines.__all__
    assert len(names) <= 40, f"pipelines __all__ has {len(names)} names"
    for name in names:
        assert hasattr(contrastkit.pipelines, name), name
    assert set(names) <= set(dir(contrastkit.pipelines))


def test_public_names_are_the_objects_of_their_homes() -> None:
    # The package imports each name from its module on first use (PEP 562): the same object.
    from contrastkit.pipelines import config, evaluation, methods, pretrain
    from contrastkit.pipelines.training import task

    assert contrastkit.pipelines.PretrainConfig is config.PretrainConfig
    assert contrastkit.pipelines.METHODS is methods.METHODS
    assert contrastkit.pipelines.knn_accuracy is evaluation.knn_accuracy
    assert contrastkit.pipelines.run_pretrain is pretrain.run_pretrain
    assert contrastkit.pipelines.NonFiniteLossError is task.NonFiniteLossError
    with pytest.raises(AttributeError, match="has no attribute 'run_everything'"):
        _ = contrastkit.pipelines.run_everything
