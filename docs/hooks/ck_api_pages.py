"""The API reference pages: one page per public module of the four packages, found on disk.

A package (or subpackage) page shows its docstring and a table of its public names, each linked
to the page of the module that defines it; a module page renders the module with mkdocstrings.
Nothing is listed by hand, so a new module gets its page and its place in the nav by itself.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

PACKAGES: tuple[str, ...] = ("objectives", "augment", "backbones", "pipelines")
API_DIR = "api"


@dataclass(frozen=True)
class ModulePage:
    """One public module: its dotted path, whether it is a package, and its page in docs/."""

    module: str  # e.g. "contrastkit.pipelines.training.loop"
    is_package: bool

    @property
    def src_uri(self) -> str:
        """api/contrastkit/pipelines/training/loop.md, or .../index.md for a package."""
        parts = self.module.split(".")
        if self.is_package:
            return "/".join([API_DIR, *parts, "index.md"])
        return "/".join([API_DIR, *parts[:-1], f"{parts[-1]}.md"])

    def relative_to(self, other: ModulePage) -> str:
        """This page's path as a link from `other`'s page."""
        return posixpath.relpath(self.src_uri, posixpath.dirname(other.src_uri))

    @property
    def title(self) -> str:
        return self.module.rsplit(".", 1)[-1]


def source_roots(repo: Path) -> list[Path]:
    """packages/<name>/src for the four packages: what mkdocstrings and the hook read."""
    return [repo / "packages" / name / "src" for name in PACKAGES]


def _is_public(path: Path, root: Path) -> bool:
    relative = path.relative_to(root)
    return not any(part.startswith("_") for part in relative.with_suffix("").parts[:-1]) and (
        path.name == "__init__.py" or not path.name.startswith("_")
    )


def find_modules(repo: Path) -> list[ModulePage]:
    """Every public module of the packages (no part of its path starts with "_"), packages first
    within each folder, sorted by name."""
    pages = []
    for name in PACKAGES:
        src = repo / "packages" / name / "src"
        package_dir = src / "contrastkit" / name
        if not (package_dir / "__init__.py").is_file():
            raise FileNotFoundError(f"package source {package_dir}/__init__.py is missing")
        for path in sorted(package_dir.rglob("*.py")):
            if not _is_public(path, src):
                continue
            parts = path.relative_to(src).with_suffix("").parts
            if path.name == "__init__.py":
                pages.append(ModulePage(".".join(parts[:-1]), is_package=True))
            else:
                pages.append(ModulePage(".".join(parts), is_package=False))
    return pages


def _nav_tree(pages: list[ModulePage], package: str) -> list:
    """The nav entries under `package`: its own page, its modules, then its subpackages."""
    own = next(p for p in pages if p.module == package and p.is_package)
    children = [p for p in pages if p.module.rsplit(".", 1)[0] == package and p is not own]
    entries: list = [own.src_uri]
    entries += [{c.title: c.src_uri} for c in children if not c.is_package]
    entries += [{c.title: _nav_tree(pages, c.module)} for c in children if c.is_package]
    return entries


def api_nav(pages: list[ModulePage], index_uri: str) -> list:
    """The "API reference" section: the hand-written overview, then one tree per package."""
    return [index_uri] + [
        {f"contrastkit.{name}": _nav_tree(pages, f"contrastkit.{name}")} for name in PACKAGES
    ]


def package_page(page: ModulePage, exports: list[tuple[str, str | None, str]]) -> str:
    """A package's page: its docstring and a table of its public names.

    exports: (public name, where it is documented, its kind), as `contrastkit_docs._exports`
    gives them: a page path (a module) or a dotted path (autorefs checks the link under
    --strict) is linked; None is rendered on this page.
    """
    lines = [
        f"# `{page.module}`",
        "",
        f"::: {page.module}",
        "    options:",
        "      members: false",
        "      show_root_heading: false",
        "      show_root_toc_entry: false",
        "",
    ]
    linked = [(name, target, kind) for name, target, kind in exports if target]
    inline = [name for name, target, _ in exports if not target]
    if linked:
        lines += ["## Public names", "", "| name | kind | defined in |", "| --- | --- | --- |"]
        for name, target, kind in linked:
            if target.endswith(".md"):
                lines.append(f"| [`{name}`]({target}) | module | |")
            else:
                module = target.rsplit(".", 1)[0]
                lines.append(f"| [`{name}`][{target}] | {kind} | `{module}` |")
        lines.append("")
    for name in inline:
        lines += [f"::: {page.module}.{name}", "    options:", "      show_root_heading: true", ""]
    return "\n".join(lines)


def module_page(page: ModulePage) -> str:
    """A module's page: the module rendered by mkdocstrings (its docstring, then its members)."""
    return "\n".join(
        [
            f"# `{page.module}`",
            "",
            f"::: {page.module}",
            "    options:",
            "      show_root_heading: false",
            "      show_root_toc_entry: false",
            "",
        ]
    )
