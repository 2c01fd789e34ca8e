"""Faults under `dvc repro` in a scratch repo: an interrupted train and a tracking server lost
mid-run leave dvc.lock as it was, and the next `dvc repro` recovers.
"""

import hashlib
import signal

import pytest
import yaml
from conftest import clean_env, make_project, run, runs_of, small_params, write_params
from fault_tools import Child
from servers import kill_server, mlflow_server

from polyfit import paths

pytestmark = pytest.mark.slow

OUTPUTS = [
    "dvc.lock",
    paths.DATASET,
    paths.MODEL,
    paths.TRAIN_METRICS,
    paths.LOSS_CURVE,
    paths.EVAL_METRICS,
    paths.FIT_CURVE,
]


def outputs(project) -> dict:
    """dvc.lock and every stage output, as bytes (None when absent)."""
    return {str(name): _bytes_or_none(project / name) for name in OUTPUTS}


def _bytes_or_none(path):
    return path.read_bytes() if path.exists() else None


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A scratch repo (small params) where `dvc repro` has run: every output exists."""
    project = make_project(tmp_path_factory.mktemp("repo") / "project", small_params())
    done = run(["dvc", "repro"], project)
    assert done.returncode == 0, done.stdout + done.stderr
    return project


@pytest.fixture
def repro_state(project):
    """The project's outputs before the test; afterwards, params restored and repro'd."""
    yield outputs(project)
    run(["git", "checkout", "params.yaml"], project)
    run(["dvc", "repro"], project)


def newest_train_run(project):
    return runs_of(f"sqlite:///{project / 'mlflow.db'}", stage="train")[0]


def recovers(project, before: dict) -> None:
    """With the params put back, `dvc repro` succeeds and restores every output byte for byte."""
    run(["git", "checkout", "params.yaml"], project)
    done = run(["dvc", "repro"], project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert outputs(project) == before
    status = run(["dvc", "status"], project)
    assert "Data and pipelines are up to date" in status.stdout


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_repro_records_nothing_and_the_next_repro_recovers(
    project, repro_state, signum
):
    write_params(project, small_params(steps=10_000_000))
    child = Child(["dvc", "repro"], project, clean_env(), new_session=True)
    child.wait_for_training()
    child.signal(signum, group=True)  # Ctrl-C in a terminal, or a cancelled CI job
    code, stdout, stderr = child.finish()
    assert code != 0
    assert "polyfit train: interrupted" in stdout + stderr
    after = outputs(project)
    assert after["dvc.lock"] == repro_state["dvc.lock"]
    assert after[str(paths.DATASET)] == repro_state[str(paths.DATASET)]
    train_run = newest_train_run(project)
    assert train_run.info.status == "KILLED"
    assert train_run.data.tags["failure_reason"] == f"interrupted by {signal.Signals(signum).name}"
    recovers(project, repro_state)


def test_server_lost_mid_run_fails_the_stage_and_dvc_records_nothing(
    project, repro_state, tmp_path
):
    write_params(project, small_params(steps=20_000, log_every=100))  # seconds of training
    with mlflow_server(tmp_path) as (uri, server):
        env = clean_env(MLFLOW_TRACKING_URI=uri)
        child = Child(["dvc", "repro"], project, env, new_session=True)
        child.wait_for_training()
        kill_server(server)
        seen_at_kill = len(child.lines)
        code, stdout, stderr = child.finish()
    assert len(child.lines) > seen_at_kill + 10  # training went on after the server was gone
    assert code != 0
    output = stdout + stderr
    assert f"polyfit train: error: MLflow at {uri} failed: " in output
    assert "Traceback" not in output
    assert "failed to reproduce 'train'" in output
    assert outputs(project)["dvc.lock"] == repro_state["dvc.lock"]
    assert "changed" in run(["dvc", "status", "train"], project).stdout
    recovers(project, repro_state)


def test_after_a_failed_train_dvc_checkout_restores_the_last_good_model(project, repro_state):
    """`dvc repro` deletes a stage's outputs before running it: after a failed train the last
    good model is in the DVC cache, not the workspace, and `dvc checkout` brings it back."""
    run(["git", "add", "dvc.lock", "metrics"], project)
    run(["git", "commit", "-qm", "the last good outputs"], project)
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    (committed,) = [
        out["md5"] for out in lock["stages"]["train"]["outs"] if out["path"] == str(paths.MODEL)
    ]
    write_params(project, small_params(optimizer="SGD", lr=1.0))  # SGD diverges at this lr
    failed = run(["dvc", "repro"], project)
    assert failed.returncode != 0
    assert "polyfit train: error: loss grew to" in failed.stdout + failed.stderr
    assert not (project / paths.MODEL).exists()  # deleted by DVC before train ran
    done = run(["dvc", "checkout"], project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert hashlib.md5((project / paths.MODEL).read_bytes()).hexdigest() == committed
    assert run(["git", "status", "--porcelain", "dvc.lock"], project).stdout == ""
