"""Shared fixtures: a scratch copy of the repo (real git, real DVC), a scratch MLflow store, a
small table of data that is not the tutorial's, and helpers to run dvc and its experiment queue.

The tests of the machinery (everything outside tests/tutorial/) run on that table with the repo's
own model block (table_params), so they keep passing after the model and data are yours."""

import atexit
import contextlib
import copy
import functools
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from polyfit import cli, paths
from polyfit.cli import PROCESS_DEFAULTS
from polyfit.errors import UsageError
from polyfit.params import validate_params

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: python -m polyfit, dvc, mlflow
DEFAULT_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = tuple(DVC_YAML["stages"])  # in pipeline order, `check` first
# What `dvc repro` writes besides dvc.lock, as dvc.yaml declares it.
OUTPUTS = [
    paths.TRAIN_DATA,
    paths.HELD_OUT_DATA,
    paths.MODEL,
    paths.TRAIN_METRICS,
    paths.EVAL_METRICS,
    paths.LOSS_CURVE,
    paths.FIT_CURVE,
]
TABLE = Path("data/table.csv")  # the machinery tests' data: write_table() writes it
TABLE_FEATURES = ["u", "v"]

# Commits made by `git` and `dvc exp` in scratch repos need an identity, whatever the machine.
os.environ.update(
    GIT_AUTHOR_NAME="polyfit tests",
    GIT_AUTHOR_EMAIL="tests@polyfit.invalid",
    GIT_COMMITTER_NAME="polyfit tests",
    GIT_COMMITTER_EMAIL="tests@polyfit.invalid",
)
# What `polyfit <command>` sets before torch loads, so tests that train in-process compute the
# same bytes as the stages (read at MKL's first call, which comes after this).
for _name, _value in PROCESS_DEFAULTS.items():
    os.environ.setdefault(_name, _value)


def lock_inputs(lock_text: str | bytes) -> dict:
    """dvc.lock without the hashes of what the pipeline computes: each stage's command, params
    and source deps."""
    computed = {str(path) for path in OUTPUTS}
    return {
        name: (
            stage["cmd"],
            stage.get("params"),
            [d for d in stage.get("deps", []) if d["path"] not in computed],
        )
        for name, stage in yaml.safe_load(lock_text)["stages"].items()
    }


# `make test` hands whole files to two processes in this order, the longest first (by each
# file's total under `pytest --durations=0`), so both finish together; files not named here
# follow in pytest's order (they take seconds).
LONGEST_FIRST = [
    "test_adapting",
    "test_sweep",
    "test_readme",
    "test_scale_out",
    "test_failures_dvc",
    "test_models",
    "test_recovery",
    "test_team",
    "test_pipeline",
    "test_failures_env",
    "test_resume",
    "test_calibrate",
    "test_ui",
    "test_failures_runs",
    "test_experiments",
    "test_reproducibility",
    "test_failures_server",
    "test_properties",
    "test_portable",
    "test_failures_inputs",
]


def pytest_collection_modifyitems(items: list) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__, len(rank)))  # stable: keeps order


def default_params() -> dict:
    """A fresh, mutable copy of the repo's params.yaml as parsed YAML."""
    return copy.deepcopy(DEFAULT_PARAMS)


def write_table(path: Path, rows: int = 96, seed: int = 0) -> None:
    """A CSV table of two features (u, v) and a target y that no model here fits exactly, in
    random order: the machinery tests' data."""
    rng = random.Random(seed)
    lines = [",".join([*TABLE_FEATURES, "y"])]
    for _ in range(rows):
        u, v = rng.uniform(-1, 1), rng.uniform(-1, 1)
        y = math.sin(2 * u) + 0.5 * v * v + rng.gauss(0, 0.05)
        lines.append(f"{u!r},{v!r},{y!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def table_params(**train_overrides) -> dict:
    """The repo's params with the table as data and a short training: speed, not accuracy."""
    params = default_params()
    csv = {"path": str(TABLE), "features": TABLE_FEATURES, "target": "y"}
    params["data"] = {"source": "csv", "csv": csv | {"held_out_fraction": 0.25, "split_seed": 0}}
    short = {"steps": 200, "lr": 0.01, "log_every": 50, "checkpoint_every": None}
    params["train"].update(short | train_overrides)
    return params


def params_error(params: dict) -> str:
    """The one line validate_params refuses these params with."""
    with pytest.raises(UsageError) as caught:
        validate_params(params, "params.yaml")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("params.yaml: ")
    return message


def write_params(folder: Path, params: dict) -> None:
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def clean_env(**extra: str) -> dict:
    """The environment for a child process: venv first on PATH, no inherited tracking URI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def venv_off_path(env: dict) -> dict:
    """`env` as a shell that never activated the venv has it: `.venv/bin/polyfit <command>`."""
    kept = [folder for folder in env["PATH"].split(os.pathsep) if folder != str(BIN)]
    return {**env, "PATH": os.pathsep.join(kept)}


def run(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 600):
    """Run a command, capturing text output; never raises on a non-zero exit."""
    return subprocess.run(
        args, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout
    )


def polyfit(*args: str, cwd: Path, env: dict | None = None, timeout: float = 600):
    return run([sys.executable, "-m", "polyfit", *args], cwd, env, timeout)


def command(capsys, *args: str) -> tuple[int, str, str]:
    """`polyfit ARGS` in this process, as cli.main runs it: (exit code, stdout, stderr)."""
    code = 0
    capsys.readouterr()  # what came before is not this command's
    try:
        cli.main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def dvc(project: Path, *args: str, env: dict | None = None, timeout: float = 600) -> str:
    """Run `dvc *args` in `project`, assert it succeeded, return its output."""
    done = run(["dvc", *args], project, env, timeout)
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr


@contextlib.contextmanager
def queue_workers(project: Path, jobs: int, env: dict | None = None):
    """`dvc queue start` for the block, then `dvc queue stop --kill`: no worker outlives it."""
    # The workers outlive `dvc queue start` and inherit its stdout, so a pipe would never close.
    started = subprocess.run(
        ["dvc", "queue", "start", "--jobs", str(jobs)],
        cwd=project,
        env=env or clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )
    try:
        assert started.returncode == 0
        yield
    finally:
        run(["dvc", "queue", "stop", "--kill"], project, env)


def wait_for_queue(project: Path, env: dict | None = None, timeout: float = 540) -> str:
    """Poll `dvc queue status` until no task is queued or running; return the final status.

    Fails with the status and task logs if a task fails or the queue is still busy at `timeout`.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = run(["dvc", "queue", "status"], project, env).stdout
        rows = [line.split() for line in status.splitlines()[1:] if line.strip()]
        states = {row[0]: row[-1] for row in rows}  # task id -> Queued, Running, Success, Failed
        failed = [task for task, state in states.items() if state == "Failed"]
        busy = [task for task, state in states.items() if state in ("Queued", "Running")]
        if failed:
            pytest.fail(f"a queued experiment failed:\n{status}\n{task_logs(project, env, failed)}")
        if not busy:
            return status
        if time.monotonic() > deadline:
            logs = task_logs(project, env, busy)
            pytest.fail(f"queue still busy after {timeout} s:\n{status}\n{logs}")
        time.sleep(2)


def task_logs(project: Path, env: dict | None, tasks: list[str]) -> str:
    """The last lines `dvc queue logs` shows for these tasks."""
    logs = "".join(run(["dvc", "queue", "logs", task], project, env).stdout for task in tasks)
    return logs[-3000:]


def make_project(destination: Path, params: dict | None = None, store: bool = True) -> Path:
    """Copy the repo's git-tracked files and the data files DVC tracks (*.dvc) into a new git
    repo with one commit (DVC included), the table beside them, with a copy of made_store() as
    its MLflow store unless `store` is False."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in [*filter(None, tracked), *dvc_tracked_files()]:
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    write_table(destination / TABLE)
    if params is not None:
        write_params(destination, params)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "scratch copy"]):
        subprocess.run(["git", *args], cwd=destination, check=True, capture_output=True)
    if store:
        copy_made_store(destination)  # git-ignored, as in a clone
    return destination


def dvc_tracked_files() -> list[str]:
    """The files the repo's *.dvc files track (`dvc add`), as paths from the repo root."""
    found = []
    for pointer in REPO.rglob("*.dvc"):
        if ".venv" in pointer.parts or ".dvc" in pointer.parts:
            continue
        for out in yaml.safe_load(pointer.read_text()).get("outs", []):
            found.append(str((pointer.parent / out["path"]).relative_to(REPO)))
    return found


@pytest.fixture
def project(tmp_path) -> Path:
    """A scratch repo with the default params; its MLflow store is <project>/mlflow.db."""
    return make_project(tmp_path / "project")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests train in this process on tensors of a few thousand numbers, as train.threads: 1
    does in a stage: a second OpenMP thread only adds waiting, a lot of it on a busy machine."""
    import torch

    torch.set_num_threads(1)


@functools.cache
def made_store() -> Path:
    """An MLflow SQLite store with its tables made and nothing else, made once per pytest
    process. Making a store's tables (MLflow's migrations) is the slow part of a store's first
    use, so scratch projects start with a copy, as a project has one after its first stage;
    tests of first use (the README's fresh clone, queue workers racing to make it) start with
    none."""
    from mlflow.tracking import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="polyfit-made-store-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()  # the migrations
    return folder / "mlflow.db"


def copy_made_store(folder: Path) -> None:
    """folder/mlflow.db: a copy of made_store(), the tables a project has after its first stage."""
    shutil.copy(made_store(), folder / "mlflow.db")


def prepare_stage_dir(folder: Path, monkeypatch, params: dict | None = None) -> None:
    """Make `folder` the project root of in-process stages on the table (or `params`), with its
    own SQLite MLflow store."""
    monkeypatch.chdir(folder)
    for name in [k for k in os.environ if k.startswith("DVC_")]:
        monkeypatch.delenv(name)
    copy_made_store(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    (folder / "dvc.yaml").write_text("stages: {}\n")  # marks the project root
    write_table(folder / TABLE)
    write_params(folder, params or table_params())


@pytest.fixture
def stage_dir(tmp_path, monkeypatch) -> Iterator[Path]:
    """A working folder for running stages in-process, with its own SQLite MLflow store."""
    import torch

    prepare_stage_dir(tmp_path, monkeypatch)
    threads = torch.get_num_threads()  # one, as train.threads sets it in a stage process
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(threads)


@contextlib.contextmanager
def stage_client(uri: str):
    """The client a stage or command makes (tracking.store.make_client), in this process; the
    process-wide tracking and registry URIs it sets are put back afterwards."""
    import mlflow

    from polyfit.tracking import store

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        yield store.make_client(uri)
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def mlflow_client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri, registry_uri=uri)  # not the process-wide one a stage may have set


def runs_of(uri: str, experiment: str = "polyfit", stage: str | None = None) -> list:
    """All runs of an experiment in a store, newest first, optionally of one stage."""
    client = mlflow_client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    query = f"tags.stage = '{stage}'" if stage else ""
    return client.search_runs([found.experiment_id], query, max_results=1000)
