"""A sweep across machines on loopback: `dask scheduler`, two `polyfit worker`s in their own
clones, a bare git origin, moto S3 as both the DVC remote and the MLflow server's artifact store.
One worker is killed mid-sweep; afterwards git, MLflow and S3 agree on every experiment.
"""

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from cluster import (
    AWS_ENV,
    BUCKET,
    dask_scheduler,
    git,
    listening_hosts,
    moto_s3,
    origin_with_project,
    polyfit_worker,
    s3_keys,
    wait_for_workers,
)
from conftest import clean_env, dvc, mlflow_client, runs_of, small_params
from servers import mlflow_server

from polyfit.sweep.grid import experiment_name

pytestmark = pytest.mark.slow
EXPERIMENT = "scale-out"
GOOD = [["train.lr=0.001"], ["train.lr=0.002"]]  # one per worker: both train at once
DIVERGES = ["train.optimizer=SGD", "train.lr=1.0"]
SWEEP_ARGS = [
    "--name",
    "e2e",
    "-S",
    "train.lr=1e-3,2e-3",
    "--also",
    "-S",
    DIVERGES[0],
    "-S",
    DIVERGES[1],
]


def kill_a_worker_mid_run(url: str, workers: dict, names: set, sweep) -> tuple[str, Path]:
    """SIGKILL the worker (its whole process group) whose clone is training one of `names`."""
    client = mlflow_client(url)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and sweep.poll() is None:
        for run in _running_train_runs(client):
            name, pid = run.data.tags.get("dvc_exp"), int(run.data.tags["pid"])
            with contextlib.suppress(OSError):
                cwd = Path(os.readlink(f"/proc/{pid}/cwd"))  # clone/.dvc/tmp/exps/tmp...
                clone = next(c for c in workers if c in cwd.parents)
                if name in names:
                    os.killpg(workers[clone].pid, signal.SIGKILL)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)  # were it in a group of its own
                    return name, clone
        time.sleep(0.2)
    pytest.fail("no train run of the sweep was seen running on a worker")


def _running_train_runs(client) -> list:
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is None:
        return []
    query = "tags.stage = 'train' and attributes.status = 'RUNNING'"
    return client.search_runs([found.experiment_id], query)


def check_fresh_clone(origin: Path, folder: Path, name: str, train_run, url: str) -> None:
    """`dvc exp pull` + `dvc exp apply` in a new clone bring the model that MLflow recorded."""
    clone = folder / f"fresh-{name}"
    git(["clone", "-q", str(origin), str(clone)], folder)
    env = clean_env(**AWS_ENV)
    dvc(clone, "exp", "pull", "origin", name, env=env)
    dvc(clone, "exp", "apply", name, env=env)
    dvc(clone, "checkout", env=env)
    model = (clone / "models" / "model.pt").read_bytes()
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    outs = {out["path"]: out for out in lock["stages"]["train"]["outs"]}
    assert hashlib.md5(model).hexdigest() == outs["models/model.pt"]["md5"]
    assert hashlib.sha256(model).hexdigest() == train_run.data.tags["model_sha256"]
    client = mlflow_client(url)
    logged = client.get_logged_model(train_run.data.tags["model_id"])
    served = mlflow.artifacts.download_artifacts(
        f"{logged.artifact_location}/artifacts/model.pt", dst_path=str(folder), tracking_uri=url
    )
    assert Path(served).read_bytes() == model  # the MLflow artifact, stored in S3


def test_sweep_across_two_workers_survives_losing_one(tmp_path):
    names = {experiment_name("e2e", c) for c in GOOD}
    diverged = experiment_name("e2e", DIVERGES)
    params = small_params()
    params["mlflow"]["experiment"] = EXPERIMENT
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(moto_s3(tmp_path))
        (tmp_path / "server").mkdir()
        url, _ = stack.enter_context(
            mlflow_server(
                tmp_path / "server",
                artifacts_destination=f"s3://{BUCKET}/mlflow",
                MLFLOW_S3_ENDPOINT_URL=s3,
                **AWS_ENV,
            )
        )
        project = origin_with_project(tmp_path, params, s3)
        origin = tmp_path / "origin.git"
        scheduler, scheduler_process = stack.enter_context(dask_scheduler(tmp_path))
        worker_env = clean_env(MLFLOW_TRACKING_URI=url, **AWS_ENV)
        clones = [tmp_path / "worker-a", tmp_path / "worker-b"]
        workers = {
            clone: stack.enter_context(polyfit_worker(origin, clone, scheduler, worker_env))
            for clone in clones
        }
        wait_for_workers(scheduler, 2)
        for process in [scheduler_process, *workers.values()]:
            assert listening_hosts(process.pid) == {"127.0.0.1"}  # RPC and HTTP alike

        with open(tmp_path / "sweep.out", "w") as out, open(tmp_path / "sweep.err", "w") as err:
            sweep = subprocess.Popen(
                [sys.executable, "-m", "polyfit", "sweep", "--scheduler", scheduler, *SWEEP_ARGS],
                cwd=project,
                env=clean_env(),
                stdout=out,
                stderr=err,
            )
            stack.callback(lambda: sweep.poll() is None and sweep.kill())
            killed_name, killed_clone = kill_a_worker_mid_run(url, workers, names, sweep)
            returncode = sweep.wait(timeout=900)
        stdout, stderr = (tmp_path / "sweep.out").read_text(), (tmp_path / "sweep.err").read_text()
        survivor = next(c for c in clones if c != killed_clone)
        for log in [tmp_path / "scheduler.log", *(tmp_path / f"{c.name}.log" for c in clones)]:
            print(f"--- {log.name}\n{log.read_text()[-6000:]}")  # pytest shows it on a failure
        print(f"--- sweep\n{stdout}{stderr}\nkilled {killed_name} on {killed_clone}")

        # The sweep completed: every configuration ran, only the diverging one failed.
        assert returncode == 1, stdout + stderr
        rows = [line for line in stdout.splitlines() if line.startswith("| e2e-")]
        assert len(rows) == len(GOOD) + 1
        assert rows[-1].startswith(f"| {diverged} |") and "failed" in rows[-1]
        assert not [row for row in rows[:-1] if "failed" in row], stderr  # every good one ran
        assert f"polyfit sweep: error: {diverged} failed (" in stderr
        assert "over 1000 x the first loss" in stderr
        killed_row = next(r for r in rows if r.startswith(f"| {killed_name} |"))
        assert killed_row.rstrip(" |").endswith(str(survivor))

        # git: one experiment ref per good configuration, under its own name, nothing else.
        refs = git(["for-each-ref", "--format=%(refname)", "refs/exps"], origin).split()
        assert sorted(ref.rsplit("/", 1)[1] for ref in refs) == sorted(names)

        # MLflow: one FINISHED train run each; the lost attempt KILLED with the reason.
        train_runs = runs_of(url, EXPERIMENT, "train")
        assert not [r for r in runs_of(url, EXPERIMENT) if r.info.status == "RUNNING"]
        finished = {}
        for run in train_runs:
            if run.info.status == "FINISHED":
                assert run.data.tags["dvc_exp"] not in finished, "a configuration ran twice"
                finished[run.data.tags["dvc_exp"]] = run
        assert set(finished) == names
        lost = [r for r in train_runs if r.info.status == "KILLED"]
        assert [r.data.tags["dvc_exp"] for r in lost] == [killed_name]
        reason = lost[0].data.tags["failure_reason"]
        assert "lost" in reason and str(survivor) in reason

        # S3 holds the MLflow artifacts; git + the DVC remote give back every model.
        keys = s3_keys(s3, "mlflow/")
        for name in sorted(names):
            model_id = finished[name].data.tags["model_id"]  # its LoggedModel's state_dict
            assert any(key.endswith(f"{model_id}/artifacts/artifacts/model.pt") for key in keys)
            check_fresh_clone(origin, tmp_path, name, finished[name], url)
        assert s3_keys(s3, "dvc/"), "the DVC remote on S3 holds the outputs"
