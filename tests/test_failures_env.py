"""The machine misbehaving: a full disk under the data, the model, the artifacts or the MLflow
store, a read-only folder, a corrupt or locked mlflow.db. Each ends in one line on stderr with
the root cause, and nothing else; the run ends FAILED where the store can still record it.

The faults are real: small tmpfs mounts (as root), filled or remounted read-only. Each fault
runs in its own `python -m polyfit` process (the exit code, and nothing on stderr but the
line); what comes after it (the stage succeeding once space is freed) runs in this process.
"""

import contextlib
import sqlite3
from pathlib import Path

import pytest
from conftest import (
    TABLE,
    copy_made_store,
    mlflow_client,
    polyfit,
    runs_of,
    table_params,
)
from fault_tools import fill, polyfit_child, stage_folder, store_env, store_of, tmpfs

from polyfit import paths

pytestmark = pytest.mark.slow


def one_line(done, line: str) -> None:
    """stderr is exactly `line`: no log records, no traceback, no warning."""
    assert done.stderr == line + "\n", done.stderr


def newest_run(uri: str, stage: str):
    return runs_of(uri, stage=stage)[0]


@contextlib.contextmanager
def in_folder(folder: Path, monkeypatch):
    """Run stages in this process in `folder`, tracking to its mlflow.db."""
    import mlflow

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with monkeypatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_TRACKING_URI", store_of(folder))
        try:
            yield
        finally:
            mlflow.set_tracking_uri(before[0])
            mlflow.set_registry_uri(before[1])


def test_full_disk_under_the_data(tmp_path, monkeypatch):
    from polyfit.stages import generate

    folder = stage_folder(tmp_path / "work")
    table = (folder / TABLE).read_bytes()
    with tmpfs(folder / "data", "64k") as data:
        (folder / TABLE).write_bytes(table)  # the mount hides the folder's own data/
        filler = fill(data)
        done = polyfit("generate", cwd=folder, env=store_env(folder))
        assert done.returncode == 1
        one_line(done, f"polyfit generate: error: {paths.TRAIN_DATA}: No space left on device")
        run_ = newest_run(store_of(folder), "generate")
        assert run_.info.status == "FAILED"
        assert "No space left on device" in run_.data.tags["failure_reason"]
        assert sorted(p.name for p in data.iterdir()) == ["filler", "table.csv"]  # no temp file
        filler.unlink()
        with in_folder(folder, monkeypatch):
            generate.main()  # space freed: the stage succeeds
        assert newest_run(store_of(folder), "generate").info.status == "FINISHED"
        assert (folder / paths.TRAIN_DATA).stat().st_size > 1000


def test_full_disk_under_the_model_fails_the_run(tmp_path, monkeypatch):
    from polyfit.stages import train

    folder = stage_folder(tmp_path / "work")
    with tmpfs(folder / "models", "64k") as models:
        filler = fill(models)
        done = polyfit("train", cwd=folder, env=store_env(folder))
        assert done.returncode == 1
        one_line(done, f"polyfit train: error: {paths.MODEL}: No space left on device")
        run_ = newest_run(store_of(folder), "train")
        assert run_.info.status == "FAILED"
        assert "No space left on device" in run_.data.tags["failure_reason"]
        assert sorted(p.name for p in models.iterdir()) == ["filler"]  # no temp file
        filler.unlink()
        with in_folder(folder, monkeypatch):
            train.main()
        assert newest_run(store_of(folder), "train").info.status == "FINISHED"


def test_full_disk_under_the_artifacts_fails_the_run_naming_them(tmp_path):
    folder = stage_folder(tmp_path / "work")
    with tmpfs(folder / "mlartifacts", "64k") as artifacts:
        fill(artifacts)
        done = polyfit("train", cwd=folder, env=store_env(folder))
    assert done.returncode == 1
    run_ = newest_run(store_of(folder), "train")
    assert run_.info.status == "FAILED"
    assert "No space left on device" in run_.data.tags["failure_reason"]
    # The first artifact train writes is its LoggedModel, in the experiment's models/ folder.
    (model,) = mlflow_client(store_of(folder)).search_logged_models([run_.info.experiment_id])
    where = model.artifact_location.removeprefix("file://")
    one_line(done, f"polyfit train: error: {where}: No space left on device")


def test_read_only_folder(tmp_path):
    folder = stage_folder(tmp_path / "work")
    with tmpfs(folder / "models", "1m", read_only=True):
        done = polyfit("train", cwd=folder, env=store_env(folder))
    assert done.returncode == 1
    one_line(done, f"polyfit train: error: {paths.MODEL}: Read-only file system")
    assert newest_run(store_of(folder), "train").info.status == "FAILED"


def test_corrupt_and_locked_stores(tmp_path, monkeypatch):
    """A corrupt mlflow.db, and one whose write lock another process holds past MLflow's 20 s
    busy timeout: the two stages run at once, so the second's wait costs no extra time."""
    from polyfit.stages import train

    locked = stage_folder(tmp_path / "locked")
    holder = sqlite3.connect(locked / "mlflow.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        waiting = polyfit_child("train", locked, store_env(locked))
        corrupt = stage_folder(tmp_path / "corrupt")
        (corrupt / "mlflow.db").write_bytes(b"this is not an SQLite database\n" * 200)
        done = polyfit("train", cwd=corrupt, env=store_env(corrupt))
        code, _, stderr = waiting.finish(timeout=180)
    finally:
        holder.close()
    assert done.returncode == 1
    one_line(
        done,
        f"polyfit train: error: MLflow tracking store {store_of(corrupt)} unusable: "
        "file is not a database",
    )
    assert not (corrupt / paths.MODEL).exists()
    assert code == 1
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("polyfit train: error: MLflow "), stderr
    assert "database is locked" in stderr
    assert not (locked / paths.MODEL).exists()
    with in_folder(locked, monkeypatch):
        train.main()  # the lock released: the same stage goes through
    assert (locked / paths.MODEL).exists()


def test_store_fills_mid_run(tmp_path):
    """The disk fills while train runs: one line with SQLite's cause, and the run ends FAILED
    or, if the store cannot even record that, the line says the run was left RUNNING."""
    folder = stage_folder(tmp_path / "work", table_params(steps=10_000, log_every=100))
    with tmpfs(tmp_path / "store", "8m") as store:
        env = store_env(store)
        copy_made_store(store)
        child = polyfit_child("train", folder, env)
        child.wait_for_training()  # the run exists; its history is logged after training
        filler = fill(store)
        code, _, stderr = child.finish()
        filler.unlink()
        run_ = newest_run(store_of(store), "train")
    assert code == 1
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert stderr.startswith(f"polyfit train: error: MLflow at {store_of(store)} failed: ")
    assert "database or disk is full" in stderr
    if run_.info.status != "FAILED":
        assert f"(run {run_.info.run_id} left RUNNING: database or disk is full)" in stderr


def test_a_full_store_at_first_use_of_the_experiment_is_one_line(tmp_path):
    """The experiment cannot even be created. PRODUCT BUG: store.connect takes the failed
    create_experiment for a lost race and crashes on the missing experiment (a traceback)."""
    folder = stage_folder(tmp_path / "work", store=False)
    with tmpfs(tmp_path / "store", "8m") as store:
        copy_made_store(store)  # tables, but no experiment yet
        fill(store)
        done = polyfit("generate", cwd=folder, env=store_env(store))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(
        f"polyfit generate: error: MLflow tracking store {store_of(store)}"
    )
    assert "database or disk is full" in done.stderr
