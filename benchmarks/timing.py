"""Shared helpers: timed child processes, scratch clones of the repo, result rows, medians."""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: python, dvc, mlflow
SCRATCH = Path(tempfile.gettempdir()) / f"polyfit-bench-{os.getpid()}"  # clones, stores


@dataclass
class Row:
    """One line of a results table: a measure, its median, the target and the verdict."""

    measure: str
    value: str
    target: str = ""
    verdict: str = ""


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    table: tuple[list[str], list[list[str]]] | None = None  # extra detail, after the rows


def scratch() -> Path:
    """The scratch folder, made on first use (scale's child processes never need one)."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    return SCRATCH


def verdict(passed: bool) -> str:
    return "pass" if passed else "**miss**"


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], unit: str = "s", digits: int = 2) -> str:
    """'3.21 s (n=5, 3.10-3.40)': the median with the count and range of the samples."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f} {unit} (n=1)"
    low, high = min(values), max(values)
    return (
        f"{median(values):.{digits}f} {unit} (n={len(values)}, {low:.{digits}f}-{high:.{digits}f})"
    )


def child_env(**extra: str) -> dict:
    """Venv first on PATH, no MLflow/DVC settings, a git identity, no DVC analytics daemon."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        GIT_AUTHOR_NAME="polyfit bench",
        GIT_AUTHOR_EMAIL="bench@polyfit.invalid",
        GIT_COMMITTER_NAME="polyfit bench",
        GIT_COMMITTER_EMAIL="bench@polyfit.invalid",
        DVC_NO_ANALYTICS="1",
    )
    env.update(extra)
    return env


def run(args: list[str], cwd: Path = REPO, check: bool = True, **env: str):
    """Run a command with the children's environment (+ env), capturing text output."""
    done = subprocess.run(args, cwd=cwd, env=child_env(**env), capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed in {cwd}:\n{done.stdout}\n{done.stderr}")
    return done


def timed(args: list[str], cwd: Path = REPO) -> tuple[float, str]:
    """(wall seconds from spawn to exit, stdout + stderr) of one command that must succeed."""
    started = time.perf_counter()
    done = run(args, cwd)
    return time.perf_counter() - started, done.stdout + done.stderr


def timed_lines(args: list[str], cwd: Path) -> tuple[float, list[tuple[float, str]]]:
    """Like `timed`, but each output line comes with the seconds since spawn it arrived at.

    PYTHONUNBUFFERED makes DVC and the stages write each line as it happens.
    """
    env = child_env(PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    with subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        lines = [(time.perf_counter() - started, line.rstrip("\n")) for line in process.stdout]
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        output = "\n".join(line for _, line in lines)
        raise RuntimeError(f"{' '.join(args)} failed in {cwd}:\n{output}")
    return seconds, lines


def fresh_clone(name: str) -> Path:
    """A `git clone` of the repo's HEAD: no DVC cache, outputs or mlflow.db."""
    destination = scratch() / name
    run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(destination)])
    return destination


_prepared: dict[str, Path] = {}


def prepared_clone() -> Path:
    """A clone on which `dvc repro` has run once (outputs cached, MLflow store created)."""
    if "clone" not in _prepared:
        clone = fresh_clone("prepared")
        run(["dvc", "repro"], clone)
        _prepared["clone"] = clone
    return _prepared["clone"]


def adopt_clone(clone: Path) -> None:
    """Reuse a clone that has been reproduced (by the cold section) as the prepared clone."""
    _prepared["clone"] = clone


def stages_run(output: str) -> list[str]:
    """The stages `dvc repro` ran, from its "Running stage 'x':" lines."""
    prefix = "Running stage '"
    lines = [line for line in output.splitlines() if line.startswith(prefix)]
    return [line[len(prefix) :].split("'")[0] for line in lines]
