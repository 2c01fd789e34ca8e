"""What the code imports is declared in pyproject.toml, in the layer it belongs to: the core
(`pip install .`, what `dvc repro` needs), an extra, or the test tools; and each is pinned."""

import ast
import functools
import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
from conftest import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = sorted(PROJECT["optional-dependencies"])
# Folders of src/ that may import an extra besides the core; the rest imports the core only.
SRC_EXTRAS = {"src/polyfit/sweep": ["cluster"]}


def imported_packages(*files: Path) -> set[str]:
    """Top-level names of third-party modules the files import."""
    ours = ("src", "tests", "benchmarks", "scripts")
    local = {path.stem for folder in ours for path in (REPO / folder).rglob("*.py")} | {"polyfit"}
    found = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - local - set(sys.stdlib_module_names)


def python_files(folder: str, skip: tuple[str, ...] = ()) -> list[Path]:
    return [
        path
        for path in (REPO / folder).rglob("*.py")
        if not any(path.is_relative_to(REPO / other) for other in skip)
    ]


def name_of(spec: str) -> str:
    """'mlflow[auth]>=3.17,<4' -> 'mlflow', normalised as pip compares names."""
    return normalise(re.split(r"[\[<>=!~ ;]", spec.strip(), maxsplit=1)[0])


def declared(*groups: str) -> set[str]:
    """Distribution names in pyproject.toml's dependencies and the named extras."""
    specs = list(PROJECT["dependencies"])
    for group in groups:
        specs += PROJECT["optional-dependencies"][group]
    return {name_of(spec) for spec in specs}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def undeclared(packages: set[str], groups: list[str]) -> dict[str, set[str]]:
    """The imported packages whose distribution is in none of the groups (nor the core)."""
    owners = owners_of_packages()
    allowed = declared(*groups)
    found = {p: {normalise(d) for d in owners.get(p, [p])} for p in packages}
    return {package: names for package, names in found.items() if not names & allowed}


@functools.cache
def owners_of_packages() -> dict[str, list[str]]:
    return packages_distributions()  # reads every installed distribution: a second or so


def pins(requirements: str) -> dict[str, str]:
    """name -> version of a requirements file; every line that is not a comment is `name==X`."""
    found = {}
    for line in (REPO / requirements).read_text().splitlines():
        if line.startswith("#") or line.startswith("-r ") or not line.strip():
            continue
        assert re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", line), f"{requirements}: {line}"
        found[name_of(line)] = line.split("==")[1]
    return found


def test_src_outside_the_sweeps_imports_only_the_core():
    files = python_files("src", skip=tuple(SRC_EXTRAS))
    assert undeclared(imported_packages(*files), []) == {}


@pytest.mark.parametrize("folder", sorted(SRC_EXTRAS))
def test_the_sweeps_import_only_the_core_and_the_cluster_extra(folder):
    assert undeclared(imported_packages(*python_files(folder)), SRC_EXTRAS[folder]) == {}


def test_tests_and_benchmarks_declare_what_they_import():
    used = imported_packages(*python_files("tests"), *python_files("benchmarks"))
    assert undeclared(used, EXTRAS) == {}


def test_every_declared_dependency_is_pinned_core_in_requirements_txt():
    core, dev = pins("requirements.txt"), pins("requirements-dev.txt")
    assert (REPO / "requirements-dev.txt").read_text().splitlines()[1] == "-r requirements.txt"
    assert declared() - set(core) == set()
    assert declared(*EXTRAS) - set(core) - set(dev) == set()
    assert set(core) & set(dev) == set()
    assert core["torch"] == "2.13.0"  # a looser pin pulls a multi-GB CUDA build


def test_requirements_txt_holds_no_extra_that_the_core_does_not_pull_in():
    """`make install` (what `make run` needs) installs no Dask, S3 or PostgreSQL client."""
    core = pins("requirements.txt")
    needed = {name for package in core for name in plain_requirements(package)}
    for extra in ("cluster", "s3", "postgres"):
        for name in declared(extra) - declared():
            assert name not in core or name in needed, f"{name} ({extra}) in requirements.txt"


def plain_requirements(package: str) -> set[str]:
    """What an installed distribution requires whatever extras are asked for."""
    try:
        specs = requires(package) or []
    except PackageNotFoundError:
        return set()
    return {name_of(spec) for spec in specs if "extra ==" not in spec}


# Run the CLI with Dask unimportable, as after `pip install .` with no extra.
WITHOUT_DASK = (
    "import sys; sys.modules['dask'] = sys.modules['distributed'] = None; "
    "from polyfit.cli import main; main(sys.argv[1:])"
)


@pytest.mark.parametrize(
    "args",
    [["sweep", "--scheduler", "tcp://127.0.0.1:9", "-S", "train.lr=1e-3"], ["worker"]],
    ids=["sweep", "worker"],
)
def test_dask_commands_without_the_extra_name_it_in_one_line(args, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_DASK, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"polyfit {args[0]}: error: Dask is not installed: install the cluster extra "
        "(pip install -e '.[cluster]')"
    ]
