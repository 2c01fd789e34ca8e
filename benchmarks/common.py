"""What every section shares: child processes, scratch clones, interleaved rounds, result rows."""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from polyfit.cli import PROCESS_DEFAULTS

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "benchmarks"
PYTHON = sys.executable  # the venv's: its bin folder also holds dvc, dask and polyfit
SCRATCH = Path(tempfile.gettempdir()) / f"polyfit-bench-{os.getpid()}"
# MLflow turns its telemetry off where any of these is set; the children must see none of them.
CI_MARKERS = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL", "PYTEST_CURRENT_TEST")


@dataclass
class Row:
    measure: str
    value: str
    target: str = ""
    verdict: str = ""


@dataclass
class Section:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Done:
    """A finished child process: its wall time, pid and output lines, each with its arrival."""

    seconds: float
    pid: int
    lines: list[tuple[float, str]]

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)


def child_env(**extra: str) -> dict:
    """This environment without MLflow, DVC, CI or `polyfit`'s own settings (a child gets the
    defaults of whatever it runs), the venv first on PATH, a git identity, no DVC analytics."""
    dropped = {*CI_MARKERS, *PROCESS_DEFAULTS}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env = {k: v for k, v in env.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{env['PATH']}"
    name, email = "polyfit bench", "bench@polyfit.invalid"
    env.update(GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email, DVC_NO_ANALYTICS="1")
    env.update(GIT_COMMITTER_NAME=name, GIT_COMMITTER_EMAIL=email)
    return env | extra


def run(args: list[str], cwd: Path = REPO, check: bool = True, **env: str) -> Done:
    """Run a command to its end, stdout and stderr together, each line timed from the spawn."""
    started = time.perf_counter()
    pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    with subprocess.Popen(args, cwd=cwd, env=child_env(**env), **pipe) as process:
        lines = [(time.perf_counter() - started, line.rstrip("\n")) for line in process.stdout]
    done = Done(time.perf_counter() - started, process.pid, lines)
    if check and process.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed in {cwd}:\n{done.output[-3000:]}")
    return done


def last_number(done: Done, label: str) -> float:
    """The number after the last `label` a child printed."""
    return float(done.output.rsplit(label, 1)[1].split()[0])


def interleave(count: int, variants: dict[str, Callable]) -> dict[str, list]:
    """`count` rounds of every variant once, the order rotated each round, so that a change in
    the machine's speed (load, this VM's slow mode) falls on all of them alike."""
    names, results = list(variants), {name: [] for name in variants}
    for index in range(count):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(variants[name]())
    return results


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio(tops: list[float], bottoms: list[float]) -> float:
    """The median of the per-round ratios."""
    return median([top / bottom for top, bottom in zip(tops, bottoms, strict=True)])


def spread(values: list[float], unit: str = "s", digits: int = 2) -> str:
    """'3.21 s (n=5, 3.10-3.40)'."""
    low, high = min(values), max(values)
    where = f"n={len(values)}" + (
        f", {low:.{digits}f}-{high:.{digits}f}" if len(values) > 1 else ""
    )
    return f"{median(values):.{digits}f} {unit} ({where})"


def target_row(measure: str, value: float, target: float, unit: str = "x") -> Row:
    """A ratio (or with unit " s", seconds) against its target: 'pass' or '**miss**'."""
    verdict = "pass" if value <= target else "**miss**"
    return Row(measure, f"{value:.3f}{unit}", f"<= {target:g}{unit}", verdict)


def scratch(name: str) -> Path:
    """A new folder under the scratch folder, removed when the run ends."""
    folder = SCRATCH / name
    folder.mkdir(parents=True)
    return folder


def fresh_clone(name: str) -> Path:
    """A `git clone` of HEAD: no DVC cache or outputs, no mlflow.db. Its stages run the working
    tree's polyfit (installed editable in the venv), with the clone's dvc.yaml and params.yaml."""
    destination = SCRATCH / name
    run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(destination)])
    return destination


_reproduced: list[Path] = []


def reproduced_clone() -> Path:
    """A clone on which `dvc repro` has run, made on first use and shared by the sections."""
    if not _reproduced:
        _reproduced.append(fresh_clone("reproduced"))
        run(["dvc", "repro"], _reproduced[0])
    return _reproduced[0]


def set_param(project: Path, key: str, value: str) -> str:
    """Set `  key: value` in params.yaml (a key under a top-level block); the old value."""
    params = project / "params.yaml"
    line = re.compile(rf"^(  {key}:[ ]*)(\S+)", flags=re.M)
    old = line.search(params.read_text())
    if old is None:
        raise RuntimeError(f"no '  {key}:' line in {params}")
    params.write_text(line.sub(rf"\g<1>{value}", params.read_text(), count=1))
    return old.group(2)


def train_stage(project: Path, checkpoint_every: str, **env: str) -> tuple[float, float]:
    """`python -m polyfit train` in `project` with this train.checkpoint_every: (wall seconds,
    the us_per_step its MLflow run logged)."""
    set_param(project, "checkpoint_every", checkpoint_every)
    done = run([PYTHON, "-m", "polyfit", "train"], project, **env)
    return done.seconds, train_metric(project, done.pid, "us_per_step")


def train_metric(project: Path, pid: int, key: str) -> float:
    """A metric the train stage of process `pid` logged to the project's store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(experiments, f"tags.stage = 'train' AND tags.pid = '{pid}'")
    if len(found) != 1:
        raise RuntimeError(f"{len(found)} train runs of process {pid} in {project}")
    return found[0].data.metrics[key]
