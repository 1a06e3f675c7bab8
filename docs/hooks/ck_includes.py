"""Markdown directives the pages use to show facts whose home is elsewhere, at build time.

    <!-- ck:include PATH#HEADING [level=N] [body] -->  the section of a repository file that
        starts at the heading whose text begins with HEADING (exactly one must), up to the next
        heading of its level or higher; its headings shifted so that it starts at level N
        (default: as is); `body` leaves out the heading line itself.
    <!-- ck:results METHOD -->  the measured results of a method: every cell of every study in
        docs/results/*/cells.csv whose method is METHOD, mean ± sample std over its seeds.
    <!-- ck:imix METHOD -->  the method's i-Mix support, or the reason it gives for refusing i-Mix.
    <!-- ck:defaults METHOD -->  what the method fills into the config (its class attributes).

Relative links of an included section are rewritten: into the page's docs when they point into
docs/, to plain text otherwise (the site holds no copy of the rest of the repository).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from pathlib import Path

import ck_config_reference

DIRECTIVE = re.compile(r"<!--\s*ck:(\w+)\s+(.*?)\s*-->")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """(line index, level, text) of every markdown heading outside fenced code blocks."""
    found, fenced = [], False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        match = _HEADING.match(line)
        if match and not fenced:
            found.append((i, len(match.group(1)), match.group(2)))
    return found


def section(text: str, heading: str) -> tuple[int, list[str]]:
    """(level, lines) of the section whose heading text starts with `heading`, heading included.

    Raises ValueError unless exactly one heading matches."""
    lines = text.splitlines()
    headings = _headings(lines)
    matches = [h for h in headings if h[2].startswith(heading)]
    if len(matches) != 1:
        names = [h[2] for h in matches]
        raise ValueError(f"heading {heading!r} must match exactly one heading, matched {names}")
    start, level, _ = matches[0]
    end = next((i for i, lv, _ in headings if i > start and lv <= level), len(lines))
    return level, lines[start:end]


def shift_headings(lines: list[str], by: int) -> list[str]:
    """Headings outside code blocks moved `by` levels (clamped to 1..6)."""
    shifted, fenced = [], False
    for line in lines:
        if _FENCE.match(line):
            fenced = not fenced
        match = _HEADING.match(line)
        if match and not fenced and by:
            level = min(6, max(1, len(match.group(1)) + by))
            line = "#" * level + " " + match.group(2)
        shifted.append(line)
    return shifted


def rewrite_links(text: str, source: Path, page: Path, repo: Path, docs: Path) -> str:
    """Relative links of `source`'s text, made right for `page` (both absolute paths)."""

    def fix(match: re.Match[str]) -> str:
        label, target = match.group(1), match.group(2)
        if re.match(r"^[a-z]+:|^#", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve()
        if resolved.is_relative_to(docs) and resolved.exists():
            relative = os.path.relpath(resolved, page.parent)
            return f"[{label}]({relative}{'#' + anchor if anchor else ''})"
        shown = resolved.relative_to(repo) if resolved.is_relative_to(repo) else path
        return label if label.strip("`") == str(shown) else f"{label} (`{shown}`)"

    return _LINK.sub(fix, text)


def include(argument: str, page: Path, repo: Path, docs: Path) -> str:
    """The `ck:include` directive's text: `PATH#HEADING [level=N] [body]` (body: without the
    heading line itself)."""
    options = re.findall(r"\s(level=\d+|body)(?=\s|$)", " " + argument)
    location = re.sub(r"\s(level=\d+|body)(?=\s|$)", "", " " + argument).strip()
    level = next((int(o[6:]) for o in options if o.startswith("level=")), None)
    relative, _, heading = location.partition("#")
    source = repo / relative
    found_level, lines = section(source.read_text(), heading)
    lines = shift_headings(lines, 0 if level is None else level - found_level)
    if "body" in options:
        lines = lines[1:]
    return rewrite_links("\n".join(lines), source, page, repo, docs)


def _mean_std(values: list[float]) -> str:
    """As the study report writes it (mean ± sample std, ddof 1; n/a with one value), "–" for
    none. The report's own function, from the sources the build put on sys.path (no torch)."""
    from contrastkit.pipelines.study.report import format_mean_std

    return format_mean_std(values) if values else "–"


def results(method: str, page: Path, docs: Path) -> str:
    """The `ck:results` directive's text: a table of the method's cells in docs/results/."""
    lines = [
        "| study | cell | profile | task | i-Mix | backbone | epochs | seeds | kNN top-1 | "
        "linear top-1 |",
        "| --- | --- | --- | --- | --- | --- | ---: | --- | ---: | ---: |",
    ]
    studies = []
    for cells_csv in sorted((docs / "results").glob("*/cells.csv")):
        with cells_csv.open(newline="") as file:
            rows = [row for row in csv.DictReader(file) if row["method"] == method]
        if not rows:
            continue
        report = os.path.relpath(cells_csv.parent / "REPORT.md", page.parent)
        studies.append(f"[{cells_csv.parent.name}]({report})")
        for cell in dict.fromkeys(row["cell"] for row in rows):
            seeds = [row for row in rows if row["cell"] == cell]
            first = seeds[0]

            def values(column: str, seeds: list[dict[str, str]] = seeds) -> list[float]:
                return [float(row[column]) for row in seeds if row[column]]

            lines.append(
                f"| [{first['study']}]({report}) | `{cell}` | {first['profile']} | "
                f"{first['task']} | {first['imix']} | {first['backbone']} | {first['epochs']} | "
                f"{', '.join(row['seed'] for row in seeds)} | {_mean_std(values('knn_top1'))} | "
                f"{_mean_std(values('linear_top1'))} |"
            )
    if not studies:
        return (
            f"No study in `docs/results/` has measured `{method}` yet: the [study reports]"
            f"({os.path.relpath(docs / 'results' / 'README.md', page.parent)}) list what was "
            "run and what is still to be measured."
        )
    return "\n".join(
        [
            "Measured by the studies in `docs/results/` (table built from their `cells.csv` when "
            "the site is built; mean ± sample std over the seeds listed). `cpu` profiles are "
            "scaled down to 2 CPU cores and are not comparable to the papers' numbers; each "
            "report lists its scale-downs. For a joint cell, linear top-1 is the joint "
            "classifier's validation top-1.",
            "",
            *lines,
            "",
            "Reports: " + ", ".join(studies) + ".",
        ]
    )


def imix(method: str, rows: dict[str, dict]) -> str:
    """The `ck:imix` directive's text, from the method class's attributes."""
    row = rows[method]
    if row.get("supports_imix"):
        return (
            f"`{method}` supports i-Mix: `method.imix: mixup` (any input) or `cutmix` (images), "
            "with `method.imix_alpha` the Beta(alpha, alpha) of the mixing ratio."
        )
    reason = row.get("imix_unsupported_reason")
    if not reason:
        return (
            f"`{method}` declares no i-Mix variant (`supports_imix = False` in its class): "
            "`method.imix` other than `none` stops the config check, which lists the methods "
            "that have one."
        )
    return (
        f"`{method}` refuses i-Mix: `method.imix` other than `none` stops the config check with "
        f"the reason its class gives: *{reason}*."
    )


def expand(
    markdown: str, page: Path, repo: Path, docs: Path, methods: dict[str, dict],
    warn: Callable[[str], None],
) -> str:  # fmt: skip
    """Every directive of a page's markdown replaced by its text (a warning for a bad one)."""

    def replace(match: re.Match[str]) -> str:
        kind, argument = match.group(1), match.group(2)
        try:
            if kind == "include":
                return include(argument, page, repo, docs)
            if kind == "results":
                return results(argument, page, docs)
            if kind == "imix":
                return imix(argument, methods)
            if kind == "defaults":
                return "\n".join(ck_config_reference.method_card(methods[argument]))
            raise ValueError(f"unknown directive ck:{kind}")
        except (OSError, ValueError, KeyError) as error:
            warn(f"{page.relative_to(docs)}: <!-- ck:{kind} {argument} -->: {error}")
            return ""

    return DIRECTIVE.sub(replace, markdown)
