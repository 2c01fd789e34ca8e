"""Every package the code imports directly is declared in pyproject.toml, not only pulled in."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from conftest import REPO


def imported_packages(folder: str) -> set[str]:
    """Top-level names of third-party modules imported anywhere under the folder."""
    local = {path.stem for path in (REPO / folder).rglob("*.py")} | {"polyfit", "conftest"}
    found = set()
    for path in (REPO / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - local - set(sys.stdlib_module_names)


def declared(*groups: str) -> set[str]:
    """Distribution names in pyproject.toml's dependencies and the named extras, normalised."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for group in groups:
        specs += project["optional-dependencies"][group]
    return {normalise(re.split(r"[\[<>=!~ ;]", spec, maxsplit=1)[0]) for spec in specs}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distributions(packages: set[str]) -> dict[str, set[str]]:
    owners = packages_distributions()
    return {package: {normalise(d) for d in owners.get(package, [package])} for package in packages}


def test_the_package_declares_what_it_imports():
    missing = {
        p: d for p, d in distributions(imported_packages("src")).items() if not d & declared()
    }
    assert missing == {}


def test_tests_and_benchmarks_declare_what_they_import():
    used = imported_packages("tests") | imported_packages("benchmarks")
    every = declared("dev", "postgres")
    missing = {p: d for p, d in distributions(used).items() if not d & every}
    assert missing == {}
