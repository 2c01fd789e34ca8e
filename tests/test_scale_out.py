"""A sweep across machines on loopback: `dask scheduler`, two `polyfit worker`s in their own
clones sharing a checkpoint folder (POLYFIT_CHECKPOINTS), a bare git origin, moto S3 as both the
DVC remote and the MLflow server's artifact store. One worker is killed mid-training; Dask runs
its configuration again on the other, which resumes from the lost worker's checkpoint in the same
MLflow run; afterwards git, MLflow and S3 agree on every experiment.
"""

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
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
    stop_when,
    train_process,
    wait_for_workers,
)
from conftest import clean_env, dvc, mlflow_client, runs_of, table_params
from servers import mlflow_server

from polyfit import files
from polyfit.sweep.grid import experiment_name

pytestmark = pytest.mark.slow
EXPERIMENT = "scale-out"
GOOD = [["train.lr=0.001"], ["train.lr=0.002"]]  # one per worker: both train at once
# A worker is killed between a checkpoint and the end of a training.
STEPS, CHECKPOINT_EVERY = 2000, 100
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


def kill_a_worker_mid_training(
    shared: Path, url: str, workers: dict, names: set
) -> tuple[str, Path, str]:
    """SIGKILL the worker (its whole process group) that trains one of `names`, once that
    training has saved a checkpoint in the `shared` folder and before it ends; (the name, the
    clone, the id of the MLflow run the training had open)."""
    client = mlflow_client(url)
    process, name = train_process(next(iter(workers)).parent, names)
    clone = next(c for c in workers if c in Path(process.cwd()).parents)
    run_id = []

    def checkpointed() -> bool:
        if not run_id:  # the run this process opened, once it has
            query = f"tags.pid = '{process.pid}' and attributes.status = 'RUNNING'"
            experiment = client.get_experiment_by_name(EXPERIMENT)
            found = client.search_runs([experiment.experiment_id], query) if experiment else []
            run_id.extend(run.info.run_id for run in found)
        for path in shared.glob("train-*.pt"):  # the configurations' (written atomically)
            saved = files.load_saved(path, path.read_bytes())
            if run_id and saved["run_id"] == run_id[0]:
                assert saved["step"] < STEPS, "caught after the training's end"
                return True
        return False

    stop_when(process, checkpointed)
    os.killpg(workers[clone].pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGKILL)  # were it in a group of its own
    return name, clone, run_id[0]


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
    params = table_params(steps=STEPS, checkpoint_every=CHECKPOINT_EVERY)
    params["mlflow"]["experiment"] = EXPERIMENT
    shared = tmp_path / "checkpoints"  # on several machines: a shared mount
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
        worker_env = clean_env(MLFLOW_TRACKING_URI=url, POLYFIT_CHECKPOINTS=str(shared), **AWS_ENV)
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
            killed = kill_a_worker_mid_training(shared, url, workers, names)
            killed_name, killed_clone, killed_run = killed
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

        # MLflow: one FINISHED train run each, the lost attempt's too: the survivor marked it
        # KILLED with the reason, then its train stage resumed from the lost worker's checkpoint
        # and carried on in that run, as the survivor's log says.
        survivor_log = (tmp_path / f"{survivor.name}.log").read_text()
        assert f"{killed_name}: resuming from step " in survivor_log, survivor_log[-3000:]
        train_runs = runs_of(url, EXPERIMENT, "train")
        assert not [r for r in runs_of(url, EXPERIMENT) if r.info.status == "RUNNING"]
        finished = {}
        for run in train_runs:
            if run.info.status == "FINISHED":
                assert run.data.tags["dvc_exp"] not in finished, "a configuration ran twice"
                finished[run.data.tags["dvc_exp"]] = run
        assert set(finished) == names
        assert [r.data.tags["dvc_exp"] for r in train_runs if r.info.status == "KILLED"] == []
        continued = finished[killed_name]
        assert continued.info.run_id == killed_run  # the lost training's own run
        assert "failure_reason" not in continued.data.tags  # it finished, in the end
        reason = continued.data.tags["interrupted"]  # the record of the lost attempt
        assert "lost" in reason and str(survivor) in reason
        client = mlflow_client(url)
        for run in finished.values():
            history = client.get_metric_history(run.info.run_id, "loss")
            assert sorted(point.step for point in history) == list(range(STEPS))  # each once
        assert not list(shared.glob("*.pt"))  # removed once trained
        assert not [c for c in clones if list(c.glob("checkpoints/*.pt"))]  # all in the shared one

        # S3 holds the MLflow artifacts; git + the DVC remote give back every model.
        keys = s3_keys(s3, "mlflow/")
        for name in sorted(names):
            model_id = finished[name].data.tags["model_id"]  # its LoggedModel's state_dict
            assert any(key.endswith(f"{model_id}/artifacts/artifacts/model.pt") for key in keys)
            check_fresh_clone(origin, tmp_path, name, finished[name], url)
        assert s3_keys(s3, "dvc/"), "the DVC remote on S3 holds the outputs"
