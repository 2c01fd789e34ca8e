"""Faults under `dvc repro` in a scratch repo (the machinery's table), after one good run:
bad params stop the pipeline at its first stage, `check`, with polyfit's own line and every
output of the good run untouched; an interrupted train, a tracking server lost mid-run and a
full disk under the MLflow store leave dvc.lock as it was, and the next `dvc repro` recovers.
"""

import signal

import pytest
from conftest import (
    OUTPUTS,
    clean_env,
    copy_made_store,
    make_project,
    mlflow_client,
    run,
    runs_of,
    table_params,
    write_params,
)
from fault_tools import Child, fill, recorded, store_of, tmpfs
from servers import kill_server, mlflow_server

pytestmark = pytest.mark.slow

# Every file `dvc repro` writes, the metrics and plots included.
WRITTEN = ["dvc.lock", *map(str, OUTPUTS)]


def outputs(project) -> dict:
    """dvc.lock and every stage output, as bytes (None when absent)."""
    return {name: _bytes_or_none(project / name) for name in WRITTEN}


def _bytes_or_none(path):
    return path.read_bytes() if path.exists() else None


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A scratch repo (the table) where `dvc repro` has run: every output exists."""
    project = make_project(tmp_path_factory.mktemp("repo") / "project", table_params())
    done = run(["dvc", "repro"], project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(outputs(project).values())
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


def set_line(project, old: str, new: str) -> None:
    """Edit params.yaml as a person would, one line."""
    path = project / "params.yaml"
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        (
            "  lr: 0.01\n",
            "  lr: abc\n",
            "polyfit check: error: params.yaml: train.lr: Input should be a valid number "
            "(got 'abc')",
        ),
        (
            "  lr: 0.01\n",
            "  lrr: 0.01\n",
            "polyfit check: error: params.yaml: train.lrr: unknown key; did you mean 'lr'?",
        ),
    ],
    ids=["bad value", "misspelt key"],
)
def test_bad_params_stop_repro_at_check_and_keep_the_last_good_outputs(
    project, repro_state, old, new, line
):
    """DVC deletes a stage's outputs before running it: `check` comes first, so bad params
    cost none of them, and the message is polyfit's (for a misspelt key DVC would otherwise
    fail first, on the key a stage lists as missing)."""
    set_line(project, old, new)
    done = run(["dvc", "repro"], project)
    assert done.returncode == 255, done.stdout + done.stderr  # DVC's code for a failed stage
    output = done.stdout + done.stderr
    assert [text for text in output.splitlines() if text.startswith("polyfit ")] == [line]
    assert "failed to reproduce 'check'" in output
    assert "Running stage 'generate'" not in output and "Running stage 'train'" not in output
    assert outputs(project) == repro_state  # every byte, dvc.lock included


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_repro_records_nothing_and_the_next_repro_recovers(
    project, repro_state, signum
):
    write_params(project, table_params(steps=2_000_000))
    lock = recorded(project)
    child = Child(["dvc", "repro"], project, clean_env(), new_session=True)
    child.wait_for_training()
    child.signal(signum, group=True)  # Ctrl-C in a terminal, or a cancelled CI job
    code, stdout, stderr = child.finish()
    assert code != 0
    name = signal.Signals(signum).name
    assert f"polyfit train: interrupted by {name}" in stdout + stderr
    after = outputs(project)
    assert recorded(project) == lock  # nothing recorded for train or evaluate
    for path in ("data/train.pt", "data/held_out.pt", "plots/fit.csv", "metrics/eval.json"):
        assert after[path] == repro_state[path], path  # stages that did not run: untouched
    train_run = newest_train_run(project)
    assert train_run.info.status == "KILLED"
    assert train_run.data.tags["failure_reason"] == f"interrupted by {name}"
    recovers(project, repro_state)


def test_server_lost_mid_run_fails_the_stage_and_dvc_records_nothing(
    project, repro_state, tmp_path
):
    write_params(project, table_params(steps=20_000, log_every=100))  # seconds of training
    lock = recorded(project)
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
    assert recorded(project) == lock
    assert "changed" in run(["dvc", "status", "train"], project).stdout
    recovers(project, repro_state)


def test_full_disk_under_the_store_fails_in_one_line_and_the_next_repro_recovers(
    project, repro_state, tmp_path
):
    """The SQLite store's disk is full: one polyfit line with SQLite's cause, not MLflow's SQL
    dump; dvc.lock records nothing; with space freed, the next `dvc repro` succeeds."""
    write_params(project, table_params(steps=100))  # train and evaluate must run again
    lock = recorded(project)
    with tmpfs(tmp_path / "store", "8m") as store:
        copy_made_store(store)
        artifacts = (project / "mlartifacts").as_uri()  # where the stages would put them
        mlflow_client(store_of(store)).create_experiment("polyfit", artifacts)  # first write: a run
        env = clean_env(MLFLOW_TRACKING_URI=store_of(store))
        filler = fill(store)
        done = run(["dvc", "repro"], project, env)
        assert done.returncode == 255, done.stdout + done.stderr
        output = done.stdout + done.stderr
        lines = [line for line in output.splitlines() if line.startswith("polyfit ")]
        assert len(lines) == 1, output
        assert lines[0].startswith(f"polyfit train: error: MLflow at {store_of(store)} failed: ")
        assert "database or disk is full" in lines[0]
        assert "Traceback" not in output and "INSERT" not in output and "[SQL" not in output
        assert "failed to reproduce 'train'" in output
        assert recorded(project) == lock  # DVC recorded nothing
        filler.unlink()
        again = run(["dvc", "repro"], project, env)
        assert again.returncode == 0, again.stdout + again.stderr
        uri = store_of(store)
        assert [found.info.status for found in runs_of(uri, stage="evaluate")] == ["FINISHED"]
    assert recorded(project) != lock
