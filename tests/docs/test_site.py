"""Every page of the site can be reached: from the navigation, and from the index's table.

``mkdocs build --strict`` (CI) fails on a page left out of ``nav`` too
(``validation: nav: omitted_files: warn`` in mkdocs.yml); this check runs with
the test suite, without the docs tools.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
_NAV_ENTRY = re.compile(r"^\s+-\s+(?:[^:]+:\s+)?(?P<page>\S+\.md)\s*$")
_INDEX_LINK = re.compile(r"^\|\s*\[[^\]]+\]\((?P<page>[\w-]+\.md)\)\s*\|")


def _nav_pages() -> list[str]:
    lines = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").splitlines()
    start = lines.index("nav:") + 1
    pages = []
    for line in lines[start:]:
        if line and not line[0].isspace():
            break
        entry = _NAV_ENTRY.match(line)
        if entry:
            pages.append(entry["page"])
    return pages


def test_every_page_is_in_the_navigation_once() -> None:
    nav = _nav_pages()
    assert len(nav) == len(set(nav)), nav
    pages = {p.name for p in DOCS.glob("*.md")}
    assert sorted(pages - set(nav)) == [], "pages missing from mkdocs.yml's nav"
    assert sorted(set(nav) - pages) == [], "nav entries without a page"


def test_the_index_table_lists_every_other_page() -> None:
    lines = (DOCS / "index.md").read_text(encoding="utf-8").splitlines()
    listed = [m["page"] for m in map(_INDEX_LINK.match, lines) if m]
    others = {p for p in _nav_pages() if p != "index.md"}
    assert sorted(others - set(listed)) == [], "pages missing from docs/index.md's table"
    assert len(listed) == len(set(listed)), listed
