"""The manual's links: every relative link in README.md, the other top-level pages and docs/
names a file or folder of the repo (anchors are not checked). Whatever pages there are: the test
reads the folder, not a list."""

import re
from pathlib import Path

from conftest import REPO

PAGES = [*sorted(REPO.glob("*.md")), *sorted((REPO / "docs").rglob("*.md"))]
INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target)
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)  # [id]: target
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)  # links shown as code are not links
EXTERNAL = ("http://", "https://", "mailto:", "#")


def relative_links(page: Path) -> list[str]:
    text = CODE.sub("", page.read_text())
    targets = INLINE.findall(text) + REFERENCE.findall(text)
    return [target for target in targets if not target.startswith(EXTERNAL)]


def test_the_pages_and_their_links_are_found():
    assert REPO / "README.md" in PAGES
    links = {page: relative_links(page) for page in PAGES}
    assert any(links.values()), "no relative link found: the patterns no longer match"


def test_the_link_patterns_read_markdown_as_written(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        'See [a](docs/a.md#part), ![img](b.png "title") and [c](<c.md>).\n'
        "`[not](code.md)` and [web](https://example.com), [here](#anchor).\n"
        "```\n[block](nope.md)\n```\n"
        "[ref]: docs/e.md\n"
    )
    assert relative_links(page) == ["docs/a.md#part", "b.png", "c.md", "docs/e.md"]


def test_every_relative_link_names_a_file():
    broken = [
        f"{page.relative_to(REPO)}: {target}"
        for page in PAGES
        for target in relative_links(page)
        if not (page.parent / target.split("#")[0]).exists()
    ]
    assert broken == []
