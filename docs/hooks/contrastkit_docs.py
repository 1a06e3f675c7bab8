"""MkDocs hook of the contrastkit site: the pages written at build time, and the page directives.

Generated: the API reference (one page per public module, `ck_api_pages`), the configuration
reference (`ck_config_reference`), the per-package changelogs (the packages' CHANGELOG.md files)
and the study reports' place in the nav (every docs/results/*/REPORT.md). Expanded in the
hand-written pages: the `<!-- ck:... -->` directives of `ck_includes`. A fact that is missing or
stale on its side (a config field without a meaning, a heading that is gone) is a warning, so
`mkdocs build --strict` fails on it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import ck_api_pages
import ck_config_reference
import ck_includes
from mkdocs.plugins import get_plugin_logger
from mkdocs.structure.files import File, Files

log = get_plugin_logger("contrastkit")

API_INDEX = "api/index.md"
RESULTS_INDEX = "results/README.md"
CHANGELOG_DIR = "changelog"


def _repo(config: Any) -> Path:
    return Path(config.config_file_path).resolve().parent


def _expand_nav(nav: list, replacements: dict[str, list]) -> list:
    """The nav with every `title: page` whose page is a key of `replacements` made a section."""
    expanded = []
    for entry in nav:
        if isinstance(entry, dict):
            title, value = next(iter(entry.items()))
            if isinstance(value, str) and value in replacements:
                value = replacements[value]
            elif isinstance(value, list):
                value = _expand_nav(value, replacements)
            entry = {title: value}
        expanded.append(entry)
    return expanded


def _results_nav(docs: Path) -> list:
    """The measured results: the index, then one entry per docs/results/<folder>/ by name, its
    study report (REPORT.md) or, for a probe's folder (a baseline), the probe's report.md."""
    entries = []
    for folder in sorted(p for p in (docs / "results").iterdir() if p.is_dir()):
        for name in ("REPORT.md", "report.md"):
            if (folder / name).is_file():
                entries.append({folder.name: f"results/{folder.name}/{name}"})
                break
    return [RESULTS_INDEX, *entries]


def on_config(config: Any) -> Any:
    repo = _repo(config)
    # The sources, not an installed copy: the config reference imports the config dataclasses
    # (which need no torch), as mkdocstrings reads the same folders (its `paths`).
    for root in reversed(ck_api_pages.source_roots(repo)):
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
    pages = ck_api_pages.find_modules(repo)
    config.nav = _expand_nav(
        config.nav,
        {
            API_INDEX: ck_api_pages.api_nav(pages, API_INDEX),
            RESULTS_INDEX: _results_nav(Path(config.docs_dir)),
        },
    )
    return config


def _exports(loader: Any, page: ck_api_pages.ModulePage) -> list:
    """(name, where it is documented, kind) of each name of a package's `__all__`.

    Where: the page of a module the name is (a relative path); the dotted path of the object on
    the page of the module that defines it (autorefs resolves it); or None when that is this
    package itself, a private module or not a module at all: the name is rendered on this page.
    """
    module = loader.modules_collection[page.module]
    found = []
    for name in module.exports or []:
        if name.startswith("__"):
            continue
        member = module[name]
        target = member.final_target if member.is_alias else member
        if target.is_module:
            shown = ck_api_pages.ModulePage(target.path, target.is_package)
            found.append((name, shown.relative_to(page), "module"))
            continue
        parent = target.parent
        private = any(part.startswith("_") for part in target.path.split("."))
        here = parent is None or parent.path == page.module or not parent.is_module
        found.append((name, None if here or private else target.path, target.kind.value))
    return found


def on_files(files: Files, config: Any) -> Files:
    import griffe

    repo = _repo(config)
    pages = ck_api_pages.find_modules(repo)
    loader = griffe.GriffeLoader(search_paths=[str(p) for p in ck_api_pages.source_roots(repo)])
    for name in ck_api_pages.PACKAGES:
        loader.load(f"contrastkit.{name}")
    loader.resolve_aliases(implicit=False, external=False)
    for page in pages:
        if page.is_package:
            content = ck_api_pages.package_page(page, _exports(loader, page))
        else:
            content = ck_api_pages.module_page(page)
        files.append(File.generated(config, page.src_uri, content=content))

    text = ck_config_reference.configuration_page(repo, log.warning)
    files.append(File.generated(config, "configuration.md", content=text))
    for name in ck_api_pages.PACKAGES:
        changelog = repo / "packages" / name / "CHANGELOG.md"
        files.append(
            File.generated(config, f"{CHANGELOG_DIR}/{name}.md", content=changelog.read_text())
        )
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if "<!-- ck:" not in markdown:
        return markdown
    repo, docs = _repo(config), Path(config.docs_dir).resolve()
    methods = {row["name"]: row for row in ck_config_reference.method_rows(repo)}
    return ck_includes.expand(markdown, docs / page.file.src_uri, repo, docs, methods, log.warning)
