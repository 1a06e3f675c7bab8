"""Test sessions: one per package (installed alone), plus lint, docs and integration.

`nox` runs them all; `nox -s objectives` runs one. Each package session builds a fresh
virtualenv, installs only that package (and the sibling packages it declares), proves that
the dependencies it must NOT pull in are absent, then runs the package's own tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import nox

nox.options.sessions = [
    "lint",
    "docs",
    "objectives",
    "augment",
    "backbones",
    "pipelines",
    "integration",
]

# torch builds that lie on this machine's disk: 2.13.0 is a 190 MB CPU wheel (our oldest
# supported torch); 2.14.1 is the newest allowed, and the only one torchvision pairs with here.
OLDEST_TORCH = ["torch==2.13.0"]
TORCH_WITH_VISION = ["torch==2.14.1", "torchvision==0.29.1"]

# A new package is one line: name -> (torch pins, sibling packages it needs, modules that must be absent).
PACKAGES: dict[str, tuple[list[str], list[str], list[str]]] = {
    "objectives": (OLDEST_TORCH, [], ["kornia", "timm", "torchvision", "accelerate"]),
    "augment": (OLDEST_TORCH, [], ["torchvision", "timm", "accelerate"]),
    "backbones": (TORCH_WITH_VISION, [], ["kornia", "accelerate"]),
    "pipelines": (TORCH_WITH_VISION, ["objectives", "augment", "backbones"], []),
}


def _then_free_disk(session: nox.Session, body: Callable[[], None]) -> None:
    """Run `body`, then delete this session's virtualenv (pass or fail).

    A torch 2.14.1 environment takes 5.6 GB; three of them side by side filled CI's disk.
    nox rebuilds environments on every run anyway, so nothing is lost. Set
    CONTRASTKIT_KEEP_NOX_ENVS=1 to keep them (for `nox -r` while developing).
    """
    try:
        body()
    finally:
        location = getattr(session.virtualenv, "location", None)
        if location and not os.environ.get("CONTRASTKIT_KEEP_NOX_ENVS"):
            shutil.rmtree(location, ignore_errors=True)
            session.log(f"removed {location} to free disk")


# The pipelines and integration tests spend much of their time in subprocesses (the command line,
# two-process launches, signals), so they run on pytest-xdist workers, one torch thread each:
# 7 minutes instead of 15 for the pipelines tests on 2 cores. The other packages' tests are
# short and run in one process.
PARALLEL = ["-n", "auto", "--maxprocesses", "4"]
PARALLEL_ENV = {"OMP_NUM_THREADS": "1"}
PARALLEL_SESSIONS = ("pipelines",)

_ABSENT_CHECK = """
import importlib.util, sys
present = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None]
if present:
    sys.exit(f"isolation broken: {present} importable in this package's own environment")
print("isolation ok: not importable:", ", ".join(sys.argv[1:]) or "(nothing to check)")
"""


def _package_session(name: str, torch_pins: list[str], siblings: list[str], absent: list[str]):
    def session_fn(session: nox.Session) -> None:
        def body() -> None:
            session.install(*torch_pins)
            session.install(*[f"./packages/{s}" for s in siblings], f"./packages/{name}[test]")
            session.run("python", "-c", _ABSENT_CHECK, *absent)
            session.run(
                "python", "-c", f"import contrastkit.{name} as m; print(m.__name__, m.__version__)"
            )
            parallel = name in PARALLEL_SESSIONS
            session.run(
                "pytest",
                f"packages/{name}/tests",
                *(PARALLEL if parallel else []),
                *session.posargs,
                env=PARALLEL_ENV if parallel else None,
            )

        _then_free_disk(session, body)

    session_fn.__doc__ = f"Install contrastkit-{name} alone and run its tests."
    return nox.session(name=name)(session_fn)


for _name, (_pins, _siblings, _absent) in PACKAGES.items():
    globals()[f"session_{_name}"] = _package_session(_name, _pins, _siblings, _absent)


@nox.session
def integration(session: nox.Session) -> None:
    """Install every package together and run the cross-package tests in tests/."""

    def body() -> None:
        session.install(*TORCH_WITH_VISION)
        session.install(*[f"./packages/{p}[test]" for p in PACKAGES])
        # lightly, only to compare losses with (tests/test_objectives_vs_lightly.py, written
        # against this pin). lightly.loss imports torch, torchvision and numpy alone, so its
        # declared deps (hydra-core, pytorch_lightning, torchmetrics, aiohttp, ...) stay out.
        # lightly.transforms (SimCLRTransform, the device check's lightly-style loop) also
        # imports lightning_utilities (32 kB, pure Python).
        session.install("--no-deps", "lightly==1.6.0", "lightning-utilities==0.15.3")
        session.run(
            "python", "-c", "import lightly, lightly.loss; print('lightly', lightly.__version__)"
        )
        session.run("pytest", "tests", *PARALLEL, *session.posargs, env=PARALLEL_ENV)

    _then_free_disk(session, body)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site: `mkdocs build --strict` into site/ (not committed), so every
    link, every API reference and every generated page must resolve.

    Installs docs/requirements.txt only: mkdocstrings reads the packages' sources statically and
    the site's hook imports just the torch-free config package from packages/pipelines/src, so
    the session proves torch is not needed. The examples on the pages run in `integration`
    (tests/test_docs_examples.py).
    """

    def body() -> None:
        session.install("-r", "docs/requirements.txt")
        session.run("python", "-c", _ABSENT_CHECK, "torch", "contrastkit")
        session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})

    _then_free_disk(session, body)
