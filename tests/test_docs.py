"""The manual's links: every relative link in README.md, BENCHMARKS.md and docs/ names a file
of the repo (anchors are not checked)."""

import re

from conftest import REPO

PAGES = [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target)


def test_every_relative_link_names_a_file():
    broken = [
        f"{page.relative_to(REPO)}: {target}"
        for page in PAGES
        for target in LINK.findall(page.read_text())
        if not target.startswith(("http://", "https://", "#", "mailto:"))
        and not (page.parent / target.split("#")[0]).exists()
    ]
    assert len(PAGES) > 10 and broken == []
