"""`polyfit sweep` and `polyfit worker`: the grid, the guards, and the local DVC queue path."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cluster import stop_when, train_process
from conftest import (
    clean_env,
    make_project,
    mlflow_client,
    polyfit,
    run,
    runs_of,
    table_params,
    venv_off_path,
)
from servers import closed_port

from polyfit import files, paths
from polyfit.sweep.grid import expand, experiment_name, experiment_ref
from polyfit.tracking.registry import SCORE


def test_grid_uses_the_syntax_of_dvc_exp_run_s():
    grid = expand(
        [
            [
                "train.lr=1e-3,1e-2",
                "train.optimizer=choice(SGD,Adam)",
                "train.steps=range(100,300,100)",
            ]
        ]
    )
    assert len(grid) == 8
    assert grid[0] == ["train.lr=0.001", "train.optimizer=SGD", "train.steps=100"]
    assert grid[-1] == ["train.lr=0.01", "train.optimizer=Adam", "train.steps=200"]
    assert len({tuple(c) for c in grid}) == 8


def test_also_joins_grids_and_drops_repeats():
    grid = expand(
        [["train.optimizer=SGD", "train.lr=1e-6"], ["train.lr=1e-3,2e-3"], ["train.lr=2e-3"]]
    )
    assert grid == [
        ["train.optimizer=SGD", "train.lr=1e-06"],
        ["train.lr=0.001"],
        ["train.lr=0.002"],
    ]


def test_names_depend_on_the_configuration_only():
    first = experiment_name("sweep", ["train.lr=0.001", "train.optimizer=SGD"])
    assert first == experiment_name("sweep", ["train.optimizer=SGD", "train.lr=0.001"])
    assert first != experiment_name("sweep", ["train.lr=0.002", "train.optimizer=SGD"])
    assert first.startswith("sweep-") and len(first) == len("sweep-") + 7


def test_bad_grid_is_one_line_exit_2(tmp_path):
    done = polyfit("sweep", "-S", "train.lr=choice(", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("polyfit sweep: error: bad -S")
    assert len(done.stderr.strip().splitlines()) == 1


def test_help_imports_no_torch_mlflow_or_dask(tmp_path):
    done = run([sys.executable, "-X", "importtime", "-m", "polyfit", "sweep", "--help"], tmp_path)
    assert done.returncode == 0
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()}
    assert not imported & {"torch", "mlflow", "dask", "distributed", "dvc"}


def _git(project, *args):
    subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)


@pytest.mark.slow  # a git origin and clone, and `polyfit sweep` processes that load Dask
def test_dask_sweep_refuses_unpushed_or_uncommitted_work(tmp_path):
    origin = tmp_path / "origin.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    project = make_project(tmp_path / "project", table_params(), store=False)
    _git(project, "remote", "add", "origin", str(origin))
    scheduler = "tcp://127.0.0.1:9"  # never contacted: the workspace is refused first

    unpushed = polyfit("sweep", "--scheduler", scheduler, "-S", "train.lr=1e-3", cwd=project)
    assert unpushed.returncode == 2
    assert "is not on origin: push it first" in unpushed.stderr
    assert len(unpushed.stderr.strip().splitlines()) == 1

    _git(project, "push", "-q", "origin", "main")
    (project / "params.yaml").write_text((project / "params.yaml").read_text() + "\n")
    env = clean_env(DASK_SCHEDULER_ADDRESS=scheduler)
    dirty = polyfit("sweep", "-S", "train.lr=1e-3", cwd=project, env=env)
    assert dirty.returncode == 2
    assert "uncommitted changes to tracked files" in dirty.stderr
    assert len(dirty.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # waits out Dask's connect timeout
def test_unreachable_scheduler_is_one_line(tmp_path):
    origin = tmp_path / "origin.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    project = make_project(tmp_path / "project", table_params(), store=False)
    _git(project, "remote", "add", "origin", str(origin))
    _git(project, "push", "-q", "origin", "main")
    with closed_port() as port:
        address = f"tcp://127.0.0.1:{port}"
        done = polyfit("sweep", "--scheduler", address, "-S", "train.lr=1e-3", cwd=project)
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"polyfit sweep: error: cannot reach the Dask scheduler at {address}")
    )
    assert "Traceback" not in done.stderr


# A configuration its stages would refuse: (-S values, the reason given).
REFUSED_CONFIGURATIONS = {
    "bad value": (
        ["train.lr=1e-3,abc"],
        "-S train.lr=abc: params.yaml: train.lr: Input should be a valid number (got 'abc')",
    ),
    "bad value in a later grid": (
        ["train.lr=2e-3", "--also", "-S", "train.steps=0"],
        "-S train.steps=0: params.yaml: train.steps: Input should be greater than or equal to 1 "
        "(got 0)",
    ),
    "misspelt key": (
        ["train.lrr=1"],
        "-S train.lrr=1: Could not override 'train.lrr'. No such key. Did you mean 'train.lr'?",
    ),
    "misspelt block": (
        ["trian.lr=1"],
        "-S trian.lr=1: Could not override 'trian.lr'. No such key. Did you mean 'train.lr'?",
    ),
    "unknown key": (
        ["train.learning_rate=1"],
        "-S train.learning_rate=1: Could not override 'train.learning_rate'. No such key.",
    ),
    "added key": (["+train.new=1"], "-S +train.new=1: params.yaml: train.new: unknown key"),
}


def test_sweep_refuses_a_configuration_its_stages_would_refuse_before_queueing(tmp_path):
    project = make_project(tmp_path / "project", table_params(), store=False)
    for case, (overrides, reason) in REFUSED_CONFIGURATIONS.items():
        done = polyfit("sweep", "-S", *overrides, cwd=project)
        assert (done.returncode, done.stdout) == (2, ""), case
        assert done.stderr == f"polyfit sweep: error: {reason}\n", case
    (project / "params.yaml").write_text("data: [\n")  # the file itself, before any override
    done = polyfit("sweep", "-S", "train.lr=1e-3", cwd=project)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("polyfit sweep: error: params.yaml: malformed YAML at line 2")
    assert done.stderr.count("\n") == 1, done.stderr
    queue = run(["dvc", "queue", "status"], project)
    assert "No experiment tasks in the queue" in queue.stdout + queue.stderr


def test_worker_refuses_a_folder_that_is_not_a_clone(tmp_path):
    done = polyfit("worker", "tcp://127.0.0.1:9", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"polyfit worker: error: {tmp_path} is not a polyfit clone (no dvc.yaml): "
        "start the worker there"
    )


# One configuration per queue worker, so both run at once (LBFGS also takes the closure path),
# then one that diverges, still queued when the workers are stopped. The first checkpoints, to
# be killed mid-training after a checkpoint.
RESUMED = [
    "train.optimizer=Adam",
    "train.lr=0.01",
    "train.steps=2000",
    "train.checkpoint_every=100",
]
GOOD = [RESUMED, ["train.optimizer=LBFGS", "train.lr=1.0"]]
DIVERGES = ["train.optimizer=SGD", "train.lr=1.0"]
RESUMING = re.compile(r"^resuming from step (\d+) \((.+)\)$", re.MULTILINE)


def setting(configuration: list[str], key: str, default=None) -> str:
    return next((o.split("=")[1] for o in configuration if o.startswith(f"{key}=")), default)


def sweep_args(name: str, jobs: int, *configurations: list[str]) -> list[str]:
    args = ["sweep", "-j", str(jobs), "--name", name]
    for i, configuration in enumerate(configurations):
        args += (["--also"] if i else []) + [a for o in configuration for a in ("-S", o)]
    return args


def kill_after_a_checkpoint(project: Path, name: str, steps: int) -> dict:
    """SIGKILL the train stage of experiment `name` (the one configuration that checkpoints)
    once it has saved a checkpoint in the project's checkpoints/, before it ends; its pid, and
    the step and MLflow run of its last checkpoint."""
    process, _ = train_process(project, {name})
    folder = project / paths.CHECKPOINTS
    stop_when(process, lambda: bool(list(folder.glob("train-*.pt"))))
    saved = next(folder.glob("train-*.pt"))
    checkpoint = files.load_saved(saved, saved.read_bytes())
    process.kill()
    assert 0 < checkpoint["step"] < steps, f"caught at step {checkpoint['step']} of {steps}"
    return {"pid": process.pid, "step": checkpoint["step"], "run_id": checkpoint["run_id"]}


@pytest.mark.slow
def test_local_sweep_outlives_stopped_workers_and_a_killed_training_resumes(tmp_path):
    """`.venv/bin/polyfit sweep -j 2` on a project with no store yet: the two queue workers race
    to make it, and every run lands in the store at the project root. Stopping the workers
    mid-sweep leaves a configuration queued, as DVC's workers can stop by themselves
    (treeverse/dvc#10562): the sweep starts them again instead of waiting forever, and names the
    configurations that failed. One of them, killed mid-training, resumes from its checkpoint
    in the project's checkpoints/ when the sweep runs it again, in the same MLflow run."""
    project = make_project(tmp_path / "project", table_params(), store=False)
    err = open(tmp_path / "sweep.err", "w+")  # noqa: SIM115 (read while the sweep runs)
    sweep = subprocess.Popen(  # as `.venv/bin/polyfit sweep`: its workers still use this venv
        [sys.executable, "-m", "polyfit", *sweep_args("loc", 2, *GOOD, DIVERGES)],
        cwd=project,
        env=venv_off_path(clean_env()),
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    resumed = experiment_name("loc", RESUMED)
    try:
        deadline = time.monotonic() + 300
        while "0/3 done, 2 running" not in (tmp_path / "sweep.err").read_text():
            assert sweep.poll() is None and time.monotonic() < deadline, "no experiment ran"
            time.sleep(0.5)
        stopped = run(["dvc", "queue", "stop"], project)  # the workers end after these tasks
        assert stopped.returncode == 0, stopped.stderr
        killed = kill_after_a_checkpoint(project, resumed, int(setting(RESUMED, "train.steps")))
        stdout, _ = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        run(["dvc", "queue", "stop", "--kill"], project)
    stderr = (tmp_path / "sweep.err").read_text()
    assert sweep.returncode == 1, stdout + stderr
    assert "sweep: the queue's workers stopped; starting them again" in stderr
    assert "sweep: 3/3 done, 0 running, 2 failed" in stderr
    rows = [line for line in stdout.splitlines() if line.startswith("| loc-")]
    assert len(rows) == 3
    diverged = experiment_name("loc", DIVERGES)
    assert {row.split(" | ")[0][2:] for row in rows if "failed" in row} == {diverged, resumed}
    assert f"polyfit sweep: error: {diverged} failed (" in stderr
    assert "over 1000 x the first loss" in stderr
    assert f"polyfit sweep: error: {resumed} failed (" in stderr

    # The killed configuration, run again: it resumes from its checkpoint.
    again = polyfit("sweep", *sweep_args("loc", 1, RESUMED)[1:], cwd=project)
    run(["dvc", "queue", "stop", "--kill"], project)
    assert again.returncode == 0, again.stdout + again.stderr
    logs = run(["dvc", "queue", "logs", resumed], project).stdout
    resuming = RESUMING.findall(logs)
    assert len(resuming) == 1, logs[-3000:]
    step, checkpoint = int(resuming[0][0]), Path(resuming[0][1])
    every, steps = (int(setting(RESUMED, f"train.{key}")) for key in ("checkpoint_every", "steps"))
    assert step == killed["step"] and step % every == 0  # the last checkpoint before the kill
    assert 0 < step < steps
    assert checkpoint.parent == project / paths.CHECKPOINTS  # the project's, not the temp copy's
    assert not checkpoint.exists()  # removed once trained
    rows = [r for r in rows if not r.startswith(f"| {resumed} |")]  # its failed first attempt
    rows.append(next(r for r in again.stdout.splitlines() if r.startswith(f"| {resumed} |")))

    # Each good experiment's row shows its final loss, and its runs are in the root store.
    uri = f"sqlite:///{project / 'mlflow.db'}"
    train_runs = runs_of(uri, stage="train")
    trains = {r.data.tags["dvc_exp"]: r for r in train_runs}
    assert len(train_runs) == len(trains)  # one run per configuration, the resumed one too
    assert trains.keys() == {experiment_name("loc", c) for c in [*GOOD, DIVERGES]}
    assert trains[diverged].info.status == "FAILED"
    assert trains[resumed].info.run_id == killed["run_id"]  # the killed training's own run
    assert trains[resumed].data.tags["pid"] != str(killed["pid"])  # continued by another process
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    for configuration in GOOD:
        name = experiment_name("loc", configuration)
        train = run(["git", "show", f"{experiment_ref(head, name)}:metrics/train.json"], project)
        assert train.returncode == 0, f"no experiment {name}"
        row = next(r for r in rows if r.startswith(f"| {name} |"))
        final_loss = float(row.split("|")[3])
        assert final_loss == pytest.approx(json.loads(train.stdout)["final_loss"], rel=1e-5)

        run_ = trains[name]
        optimizer, lr = (
            setting(configuration, "train.optimizer"),
            setting(configuration, "train.lr"),
        )
        assert run_.info.status == "FINISHED"
        assert run_.data.params["train.optimizer"] == optimizer
        assert float(run_.data.params["train.lr"]) == float(lr)
        assert run_.info.run_name == f"train {optimizer} lr={float(lr):g} [{name}]"
        history = mlflow_client(uri).get_metric_history(run_.info.run_id, "loss")
        steps = int(setting(configuration, "train.steps", table_params()["train"]["steps"]))
        assert sorted(point.step for point in history) == list(range(steps))  # each step once
        assert SCORE in run_.data.metrics  # evaluate found its train run
    assert len(runs_of(uri, stage="evaluate")) == len(GOOD)
    assert not list((project / ".dvc" / "tmp").rglob("mlflow.db"))  # nothing tracked in copies
