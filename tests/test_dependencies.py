"""What the code imports is declared in pyproject.toml, in the layer it belongs to: the core
(`pip install .`, what `dvc repro` needs), an extra, or the test tools; and each is pinned.
Where the code imports: at the top of each module, except in cli.py, which imports a command's
module only when it runs, so the commands that need neither torch nor MLflow start without them."""

import ast
import functools
import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

import pytest
from conftest import REPO, table_params, write_params

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
    """Whatever files tests/ and benchmarks/ hold: each package they import is declared."""
    used = imported_packages(*python_files("tests"), *python_files("benchmarks"))
    assert {"pytest", "torch"} <= used  # the scan reads the files
    assert undeclared(used, EXTRAS) == {}


def test_every_declared_dependency_is_pinned_core_in_requirements_txt():
    core, dev = pins("requirements.txt"), pins("requirements-dev.txt")
    assert (REPO / "requirements-dev.txt").read_text().splitlines()[1] == "-r requirements.txt"
    assert declared() - set(core) == set()
    assert declared(*EXTRAS) - set(core) - set(dev) == set()
    assert set(core) & set(dev) == set()
    assert core["torch"] == "2.13.0"  # a looser pin pulls a multi-GB CUDA build


# The core's portability layer: the SQLite store's first-use lock (filelock), available memory
# and live processes (psutil), and the served model's input frames (pandas).
PORTABILITY = ("filelock", "psutil", "pandas")


@pytest.mark.parametrize("name", PORTABILITY)
def test_the_portability_dependencies_are_core_declared_pinned_and_used(name):
    assert name in declared()  # `pip install .` brings it, no extra needed
    assert name in pins("requirements.txt")
    assert name in pins_of("requirements.in")  # `make lock` keeps it in the core
    src = imported_packages(*python_files("src", skip=tuple(SRC_EXTRAS)))
    assert name in src, f"{name} is declared but src/ outside the sweeps does not import it"


def pins_of(requirements_in: str) -> set[str]:
    """The names a hand-written requirements file asks for."""
    lines = (REPO / requirements_in).read_text().splitlines()
    return {name_of(line) for line in lines if line.strip() and not line.startswith(("#", "-"))}


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
        f"polyfit {args[0]}: error: distributed is not installed: install the cluster extra "
        "(pip install -e '.[cluster]')"
    ]


# --- where the code imports ---


def deferred_imports(path: Path) -> list[str]:
    """The import statements of a module that are not at its top level (inside a function, a
    class or a conditional; a module-level `with` block is still the top level), as
    'line: statement'."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    top |= {id(inner) for node in tree.body if isinstance(node, ast.With) for inner in node.body}
    return [
        f"{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top
    ]


# The one deferral besides cli.py, and why: a local sweep must run without the cluster extra, so
# sweep/command.py imports the Dask path (sweep/cluster.py imports distributed) for a Dask sweep
# only.
OPTIONAL_EXTRA = {"src/polyfit/sweep/command.py": ["from polyfit.sweep import cluster"]}


def test_only_cli_py_defers_imports():
    found = {
        str(path.relative_to(REPO)): [line.split(": ", 1)[1] for line in deferred_imports(path)]
        for path in python_files("src")
    }
    deferring = {path: imports for path, imports in found.items() if imports}
    assert deferring.pop("src/polyfit/cli.py")  # a command's module, when it runs
    assert deferring == OPTIONAL_EXTRA
    cluster = imported_packages(REPO / "src/polyfit/sweep/cluster.py")
    assert undeclared(cluster, []) == {"distributed": {"distributed"}}  # an extra, not the core


def write_gate_repo(folder: Path) -> None:
    """params.yaml, gate.yaml and a metrics file committed to git: what `polyfit gate` reads."""
    write_params(folder, table_params())
    (folder / "gate.yaml").write_text("metrics/m.json:\n  loss: {better: lower, abs: 0, rel: 0}\n")
    (folder / "metrics").mkdir()
    (folder / "metrics" / "m.json").write_text('{"loss": 1.0}\n')
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "gate"]):
        subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)


def imported_by(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `python -m polyfit ARGS`; (its result, the top-level modules the process imported)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "polyfit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    return done, {line.split("|")[-1].strip().split(".")[0] for line in lines}


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [(["--help"], 0), (["check"], 0), (["gate"], 0), (["train"], 2)],
    ids=["help", "check", "gate", "stage-with-bad-params"],
)
def test_commands_that_need_no_model_start_without_torch_or_mlflow(args, exit_code, tmp_path):
    """`polyfit --help`, `check` and `gate` never load torch or MLflow (seconds of imports), nor
    does a stage that refuses its params."""
    write_gate_repo(tmp_path)
    if args == ["train"]:
        params = (tmp_path / "params.yaml").read_text()
        (tmp_path / "params.yaml").write_text(params.replace("lr: 0.01", "lr: '0.01'"))
    done, imported = imported_by(args, tmp_path)
    assert done.returncode == exit_code, done.stdout + done.stderr
    assert {"polyfit", "argparse"} <= imported  # the import log was read
    assert not imported & {"torch", "mlflow"}, sorted(imported & {"torch", "mlflow"})
