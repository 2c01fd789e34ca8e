"""`polyfit sweep` and `polyfit worker`: the grid, the guards, and the local DVC queue path."""

import json
import subprocess
import sys
import time

import pytest
from conftest import (
    clean_env,
    make_project,
    mlflow_client,
    polyfit,
    run,
    runs_of,
    small_params,
    venv_off_path,
)
from servers import closed_port

from polyfit.sweep.grid import expand, experiment_name, experiment_ref


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


def test_dask_sweep_refuses_unpushed_or_uncommitted_work(tmp_path):
    origin = tmp_path / "origin.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    project = make_project(tmp_path / "project", small_params())
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
    project = make_project(tmp_path / "project", small_params())
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
    project = make_project(tmp_path / "project", small_params())
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
# then one that diverges, still queued when the workers are stopped.
GOOD = [["train.optimizer=Adam", "train.lr=0.01"], ["train.optimizer=LBFGS", "train.lr=1.0"]]
DIVERGES = ["train.optimizer=SGD", "train.lr=1.0"]


@pytest.mark.slow
def test_local_sweep_lands_every_run_in_the_root_store_and_outlives_stopped_workers(tmp_path):
    """`.venv/bin/polyfit sweep -j 2` on a project with no store yet: the two queue workers race
    to make it. Stopping them mid-sweep leaves a configuration queued, as DVC's workers can stop
    by themselves (treeverse/dvc#10562): the sweep starts them again instead of waiting forever,
    and names the configuration that failed."""
    project = make_project(tmp_path / "project", small_params(), store=False)
    args = ["sweep", "-j", "2", "--name", "loc", "-S", GOOD[0][0], "-S", GOOD[0][1]]
    args += ["--also", "-S", GOOD[1][0], "-S", GOOD[1][1]]
    args += ["--also", "-S", DIVERGES[0], "-S", DIVERGES[1]]
    err = open(tmp_path / "sweep.err", "w+")  # noqa: SIM115 (read while the sweep runs)
    sweep = subprocess.Popen(  # as `.venv/bin/polyfit sweep`: its workers still use this venv
        [sys.executable, "-m", "polyfit", *args],
        cwd=project,
        env=venv_off_path(clean_env()),
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while "0/3 done, 2 running" not in (tmp_path / "sweep.err").read_text():
            assert sweep.poll() is None and time.monotonic() < deadline, "no experiment ran"
            time.sleep(0.5)
        stopped = run(["dvc", "queue", "stop"], project)  # the workers end after these tasks
        assert stopped.returncode == 0, stopped.stderr
        stdout, _ = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        run(["dvc", "queue", "stop", "--kill"], project)
    stderr = (tmp_path / "sweep.err").read_text()
    assert sweep.returncode == 1, stdout + stderr
    assert "sweep: the queue's workers stopped; starting them again" in stderr
    assert "sweep: 3/3 done, 0 running, 1 failed" in stderr
    rows = [line for line in stdout.splitlines() if line.startswith("| loc-")]
    assert len(rows) == 3
    diverged = experiment_name("loc", DIVERGES)
    assert rows[-1].startswith(f"| {diverged} |") and "failed" in rows[-1]
    assert f"polyfit sweep: error: {diverged} failed (" in stderr
    assert "over 1000 x the first loss" in stderr

    # Each good experiment's row shows its final loss, and its runs are in the root store.
    uri = f"sqlite:///{project / 'mlflow.db'}"
    train_runs = runs_of(uri, stage="train")
    trains = {r.data.tags["dvc_exp"]: r for r in train_runs}
    assert len(train_runs) == len(trains)  # one run per configuration
    assert trains.keys() == {experiment_name("loc", c) for c in [*GOOD, DIVERGES]}
    assert trains[diverged].info.status == "FAILED"
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    for configuration in GOOD:
        name = experiment_name("loc", configuration)
        train = run(["git", "show", f"{experiment_ref(head, name)}:metrics/train.json"], project)
        assert train.returncode == 0, f"no experiment {name}"
        row = next(r for r in rows if r.startswith(f"| {name} |"))
        final_loss = float(row.split("|")[3])
        assert final_loss == pytest.approx(json.loads(train.stdout)["final_loss"], rel=1e-5)

        run_ = trains[name]
        optimizer, lr = (value.split("=")[1] for value in configuration)
        assert run_.info.status == "FINISHED"
        assert run_.data.params["train.optimizer"] == optimizer
        assert float(run_.data.params["train.lr"]) == float(lr)
        assert run_.info.run_name == f"train {optimizer} lr={float(lr):g} [{name}]"
        history = mlflow_client(uri).get_metric_history(run_.info.run_id, "loss")
        assert len(history) == small_params()["train"]["steps"]
        assert "eval.train_set.mse" in run_.data.metrics  # evaluate found its train run
    assert len(runs_of(uri, stage="evaluate")) == len(GOOD)
    assert not list((project / ".dvc" / "tmp").rglob("mlflow.db"))  # nothing tracked in copies
