"""Runs that end abnormally: Ctrl-C and SIGTERM, SIGKILL then `polyfit runs cleanup` (psutil
tells live processes from dead ones), an unreachable or malformed tracking URI, and three
trainings writing to one fresh SQLite store at once.

Trainings run in real child processes (`python -m polyfit train`) against a real store, on the
machinery's table (conftest.table_params).
"""

import os
import signal
import socket
import subprocess
import time
from operator import attrgetter

import pytest
from conftest import (
    command,
    mlflow_client,
    polyfit,
    runs_of,
    stage_client,
    table_params,
    write_params,
)
from fault_tools import polyfit_child, snapshot, stage_folder, store_env, write_model
from servers import hanging_up_server

from polyfit import files, paths
from polyfit.tools import cleanup

LONG = 2_000_000  # steps: training outlasts any test, so only a signal ends it (800 MB of
# the memory check's estimate: a busy machine still has that)


@pytest.fixture
def long_training(tmp_path):
    """A stage folder holding earlier outputs, whose next train would run for hours."""
    folder = stage_folder(tmp_path / "work", table_params(steps=LONG, log_every=100))
    write_model(folder)
    for name in (paths.TRAIN_METRICS, paths.LOSS_CURVE):
        files.write_atomic(folder / name, f"earlier {name}\n".encode())
    return folder


def store_uri(folder) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def run_by_pid(uri: str, pid: int):
    """The one run that process `pid` created."""
    found = [run for run in runs_of(uri) if run.data.tags.get("pid") == str(pid)]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_training_ends_killed_and_keeps_earlier_outputs(long_training, signum):
    before = snapshot(long_training)
    child = polyfit_child("train", long_training, store_env(long_training))
    child.wait_for_training()
    child.signal(signum)
    code, _, stderr = child.finish()
    assert code == 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    name = signal.Signals(signum).name
    assert stderr.splitlines() == [f"polyfit train: interrupted by {name}"]
    assert "Traceback" not in stderr
    assert snapshot(long_training) == before  # byte for byte, and no temp files left behind
    run = run_by_pid(store_uri(long_training), child.process.pid)
    assert run.info.status == "KILLED"
    assert run.data.tags["failure_reason"] == f"interrupted by {name}"


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    (tmp_path / "model.pt").mkdir()  # the rename onto it fails after the bytes are written
    with pytest.raises(OSError) as caught:
        files.write_atomic(tmp_path / "model.pt", b"new")
    assert caught.value.filename == str(tmp_path / "model.pt")  # the output, not the temp file
    assert [path.name for path in tmp_path.iterdir()] == ["model.pt"]
    (tmp_path / "model.pt").rmdir()
    files.write_atomic(tmp_path / "model.pt", b"new")
    assert [path.name for path in tmp_path.iterdir()] == ["model.pt"]


@pytest.mark.slow
def test_cleanup_marks_runs_of_dead_processes_killed(long_training, zombie, monkeypatch, capsys):
    child = polyfit_child("train", long_training, store_env(long_training))
    child.wait_for_training()
    child.signal(signal.SIGKILL)  # no handler runs: the run stays RUNNING
    child.finish()
    uri = store_uri(long_training)
    orphan = run_by_pid(uri, child.process.pid)
    assert orphan.info.status == "RUNNING"
    others = seeded_running_runs(uri, zombie.pid)
    monkeypatch.chdir(long_training)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with stage_client(uri):  # puts back the process-wide URIs the command sets
        code, out, err = command(capsys, "runs", "cleanup")
        assert (code, err) == (0, ""), err
        again = command(capsys, "runs", "cleanup")
    client = mlflow_client(uri)
    status = {run_id: client.get_run(run_id).info.status for run_id in others.values()}
    status[orphan.info.run_id] = client.get_run(orphan.info.run_id).info.status
    assert status == {
        orphan.info.run_id: "KILLED",
        others["pid reused"]: "KILLED",
        others["zombie"]: "KILLED",
        others["live"]: "RUNNING",
        others["other host"]: "RUNNING",
        others["untagged"]: "RUNNING",
    }
    reason = client.get_run(orphan.info.run_id).data.tags["failure_reason"]
    assert reason.startswith(f"process {child.process.pid} on {socket.gethostname()} ended")
    assert f"marked KILLED: run {orphan.info.run_id} ({orphan.info.run_name}): " in out
    assert "3 run(s) marked KILLED, 3 left RUNNING" in out
    assert again[1].endswith(
        "0 run(s) marked KILLED, 3 left RUNNING (live, other host or untagged)\n"
    )


@pytest.fixture
def zombie():
    """A child process that has exited but is not reaped yet (a zombie); reaped afterwards."""
    child = subprocess.Popen(["true"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # wait, but leave it unreaped
    yield child
    child.wait()


def seeded_running_runs(uri: str, zombie_pid: int) -> dict[str, str]:
    """RUNNING runs that cleanup must judge: label -> run id."""
    client = mlflow_client(uri)
    experiment = client.get_experiment_by_name("polyfit").experiment_id
    host, me = socket.gethostname(), str(os.getpid())
    day_ago = int((time.time() - 86400) * 1000)
    seeds = {
        "live": ({"host": host, "pid": me}, None),  # this test process
        "pid reused": ({"host": host, "pid": me}, day_ago),  # run older than the process
        "zombie": ({"host": host, "pid": str(zombie_pid)}, None),  # exited, not yet reaped
        "other host": ({"host": "elsewhere.invalid", "pid": "1"}, None),
        "untagged": ({}, None),
    }
    return {
        label: client.create_run(experiment, start_time, tags, run_name=label).info.run_id
        for label, (tags, start_time) in seeds.items()
    }


def test_a_live_process_is_alive_and_an_exited_one_is_not(zombie):
    assert cleanup.process_alive(os.getpid(), time.time())
    assert not cleanup.process_alive(os.getpid(), time.time() - 86400)  # pid reused since
    assert not cleanup.process_alive(zombie.pid, time.time())  # a zombie: exited, not reaped
    zombie.wait()
    assert not cleanup.process_alive(zombie.pid, time.time())  # gone


def test_orphan_reason_needs_this_host_and_a_pid():
    started = time.time() * 1000
    assert cleanup.orphan_reason({}, started, "here") is None
    assert cleanup.orphan_reason({"host": "there", "pid": "1"}, started, "here") is None
    assert cleanup.orphan_reason({"host": "here", "pid": "x"}, started, "here") is None
    assert cleanup.orphan_reason({"host": "here", "pid": str(os.getpid())}, started, "here") is None


@pytest.mark.slow
def test_unreachable_server_fails_fast_before_training(tmp_path):
    folder = stage_folder(tmp_path / "work")
    before = snapshot(folder)
    with hanging_up_server() as (port, connections):
        uri = f"http://127.0.0.1:{port}"
        done = polyfit("train", cwd=folder, env=store_env(folder, MLFLOW_TRACKING_URI=uri))
    assert done.returncode == 1
    # Fast by construction, whatever the machine's load: the health probe's one request
    # (tracking.uri.probe_server) fails the stage, not MLflow's minutes of retries.
    assert connections[0] == 1
    assert done.stderr.startswith(f"polyfit train: error: MLflow tracking store {uri} unusable")
    assert done.stderr.count("\n") == 1
    assert done.stdout == ""  # not one loss line: training never started
    assert snapshot(folder) == before


@pytest.mark.parametrize(
    ("uri", "cause"),
    [
        ("http://", "No host supplied"),
        ("http://127.0.0.1:99999", "Failed to parse"),
        ("garbage://x", "unsupported scheme 'garbage'; use sqlite:///PATH/mlflow.db or a"),
        ("databricks", "unsupported scheme 'databricks'"),
        ("mlruns", "a path means MLflow's file store, which MLflow 3 refuses for tracking"),
        ("file:///tmp/mlruns", "a path means MLflow's file store"),
    ],
)
def test_a_malformed_or_unsupported_tracking_uri_is_one_line_naming_it(tmp_path, uri, cause):
    write_params(tmp_path, table_params())
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")  # marks the project root
    done = polyfit("generate", cwd=tmp_path, env=store_env(tmp_path, MLFLOW_TRACKING_URI=uri))
    assert done.returncode == 1
    assert done.stderr.startswith(f"polyfit generate: error: MLflow tracking store {uri} unusable")
    assert cause in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dvc.yaml", "params.yaml"]


@pytest.mark.slow
def test_concurrent_trainings_record_complete_runs_and_register_one_version(tmp_path):
    """One fresh SQLite store, three processes: first use, run creation, logging and the first
    registration all race."""
    steps = 100
    uri = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    params = table_params(steps=steps, log_every=50)
    folders = [  # each folder its own data
        stage_folder(tmp_path / f"work{seed}", params, store=False, table_seed=seed)
        for seed in range(3)
    ]
    children = [
        polyfit_child("train", folder, store_env(folder, MLFLOW_TRACKING_URI=uri))
        for folder in folders
    ]
    for child in children:
        code, _, stderr = child.finish(timeout=300)
        assert code == 0, stderr
    client = mlflow_client(uri)
    for folder, child in zip(folders, children, strict=True):
        run = run_by_pid(uri, child.process.pid)
        assert run.info.status == "FINISHED"
        data_md5 = files.digests((folder / paths.TRAIN_DATA).read_bytes()).md5
        assert run.data.tags["data_md5"] == data_md5
        history = sorted(client.get_metric_history(run.info.run_id, "loss"), key=attrgetter("step"))
        assert [point.step for point in history] == list(range(steps))
        assert [point.value for point in history] == loss_curve(folder)  # its own, unmixed
    # Only the first model of a fresh project is registered (version 1, champion).
    name = params["mlflow"]["registered_model"]
    versions = client.search_model_versions(f"name = '{name}'")
    assert [int(version.version) for version in versions] == [1], [
        (version.version, version.run_id) for version in versions
    ]
    assert int(client.get_model_version_by_alias(name, "champion").version) == 1


def loss_curve(folder) -> list[float]:
    """The loss column of the folder's plots/loss.csv."""
    rows = (folder / paths.LOSS_CURVE).read_text().splitlines()[1:]
    return [float(row.split(",")[1]) for row in rows]
