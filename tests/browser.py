"""A real browser for tests: Debian's headless Chromium, and a reader for the DOM it renders."""

import contextlib
import os
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

# No sandbox: tests run as root in CI containers. The rest keeps a fresh profile quiet and offline.
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",  # let the page fetch and render for 15 s of virtual time
]


def chromium() -> str:
    """The chromium executable; fails (never skips) without it: CI installs it."""
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium not found: `apt-get install -y chromium` installs it (.ci/run does)")
    return found


def render(url: str, folder: Path, *options: str, timeout: float = 180) -> str:
    """Run headless Chromium on `url` with a fresh profile in `folder`; return its stdout."""
    profile = folder / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    command = [chromium(), *FLAGS, f"--user-data-dir={profile}", *options, url]
    browser = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its renderer and helper processes share the group
    )
    try:
        out, err = browser.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.communicate()
        pytest.fail(f"chromium did not finish {url} in {timeout} s")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(browser.pid, signal.SIGKILL)  # helpers left behind, if any
    assert browser.returncode == 0, f"chromium exited {browser.returncode}:\n{err[-3000:]}"
    return out


def dump_dom(url: str, folder: Path, width: int = 1920, height: int = 1080) -> str:
    """The page's DOM after its scripts ran. The runs table renders only the columns in view."""
    return render(url, folder, f"--window-size={width},{height}", "--dump-dom")


def screenshot(url: str, path: Path, folder: Path, width: int = 1600, height: int = 900) -> None:
    render(url, folder, f"--window-size={width},{height}", f"--screenshot={path}")
    assert path.is_file(), f"chromium wrote no screenshot of {url}"


class Page(HTMLParser):
    """The parts of a rendered MLflow page that tests check: table rows, header ids, links."""

    def __init__(self, dom: str):
        super().__init__()
        self.rows: dict[int, str] = {}  # row-index -> its text (pinned and scrolled parts joined)
        self.column_ids: list[str] = []  # col-id of every rendered column header
        self.links: list[str] = []
        self._open: list[int | None] = []  # the row-index of each open element, if it is a row
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "a" and attributes.get("href"):
            self.links.append(attributes["href"])
        if attributes.get("role") == "columnheader" and attributes.get("col-id"):
            self.column_ids.append(attributes["col-id"])
        row = attributes.get("row-index") if attributes.get("role") == "row" else None
        if tag not in VOID_TAGS:
            self._open.append(int(row) if row is not None else None)

    def handle_endtag(self, tag):
        if tag not in VOID_TAGS and self._open:
            self._open.pop()

    def handle_data(self, data):
        rows = [index for index in self._open if index is not None]
        if rows:
            self.rows[rows[-1]] = self.rows.get(rows[-1], "") + data

    def row_texts(self) -> list[str]:
        """Each table row's text, top to bottom."""
        return [self.rows[index] for index in sorted(self.rows)]


# HTML elements without an end tag (Chromium writes svg shapes with one: <path></path>).
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}
VOID_TAGS |= {"track", "wbr"}
