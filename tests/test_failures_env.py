"""The machine misbehaving: a full disk under the data, the model or the MLflow store, a
read-only folder, a corrupt or locked mlflow.db. Each ends in one line on stderr with the
root cause, and nothing else; the run ends FAILED where the store can still record it.

The faults are real: small tmpfs mounts (as root), filled or remounted read-only.
"""

import contextlib
import errno
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import (
    copy_made_store,
    make_project,
    mlflow_client,
    polyfit,
    run,
    runs_of,
    small_params,
)
from fault_tools import polyfit_child, stage_folder, store_env

from polyfit import paths

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def tmpfs(folder: Path, size: str, read_only: bool = False):
    """A tmpfs of `size` mounted on `folder` for the block, unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Write a filler file until the file system is full; return it (delete it to free space)."""
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def store_of(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def one_line(done, line: str) -> None:
    """stderr is exactly `line`: no log records, no traceback, no warning."""
    assert done.stderr == line + "\n", done.stderr


def newest_run(uri: str, stage: str):
    return runs_of(uri, stage=stage)[0]


def test_full_disk_under_the_data(tmp_path):
    folder = stage_folder(tmp_path / "work", small_params())
    with tmpfs(folder / "data", "64k") as data:
        filler = fill(data)
        done = polyfit("generate", cwd=folder, env=store_env(folder))
        assert done.returncode == 1
        one_line(done, f"polyfit generate: error: {paths.DATASET}: No space left on device")
        run_ = newest_run(store_of(folder), "generate")
        assert run_.info.status == "FAILED"
        assert "No space left on device" in run_.data.tags["failure_reason"]
        assert sorted(p.name for p in data.iterdir()) == ["filler"]  # no temp file left
        filler.unlink()
        done = polyfit("generate", cwd=folder, env=store_env(folder))
        assert done.returncode == 0, done.stderr
        assert (folder / paths.DATASET).stat().st_size > 16000


def test_full_disk_under_the_model_fails_the_run(tmp_path):
    folder = stage_folder(tmp_path / "work", small_params())
    with tmpfs(folder / "models", "64k") as models:
        filler = fill(models)
        done = polyfit("train", cwd=folder, env=store_env(folder))
        assert done.returncode == 1
        one_line(done, f"polyfit train: error: {paths.MODEL}: No space left on device")
        run_ = newest_run(store_of(folder), "train")
        assert run_.info.status == "FAILED"
        assert "No space left on device" in run_.data.tags["failure_reason"]
        filler.unlink()
        assert polyfit("train", cwd=folder, env=store_env(folder)).returncode == 0


def test_full_disk_under_the_artifacts_fails_the_run_naming_them(tmp_path):
    folder = stage_folder(tmp_path / "work", small_params())
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
    folder = stage_folder(tmp_path / "work", small_params())
    with tmpfs(folder / "models", "1m", read_only=True):
        done = polyfit("train", cwd=folder, env=store_env(folder))
    assert done.returncode == 1
    one_line(done, f"polyfit train: error: {paths.MODEL}: Read-only file system")
    assert newest_run(store_of(folder), "train").info.status == "FAILED"


def test_corrupt_store(tmp_path):
    folder = stage_folder(tmp_path / "work", small_params())
    (folder / "mlflow.db").write_bytes(b"this is not an SQLite database\n" * 200)
    done = polyfit("train", cwd=folder, env=store_env(folder))
    assert done.returncode == 1
    one_line(
        done,
        f"polyfit train: error: MLflow tracking store {store_of(folder)} unusable: "
        "file is not a database",
    )
    assert not (folder / paths.MODEL).exists()


def test_locked_store(tmp_path):
    """Another process holds mlflow.db's write lock past MLflow's 20 s busy timeout."""
    folder = stage_folder(tmp_path / "work", small_params())
    holder = sqlite3.connect(folder / "mlflow.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        done = polyfit("train", cwd=folder, env=store_env(folder))
    finally:
        holder.close()
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("polyfit train: error: MLflow "), done.stderr
    assert "database is locked" in done.stderr
    assert polyfit("train", cwd=folder, env=store_env(folder)).returncode == 0  # lock released


def test_store_fills_mid_run(tmp_path):
    """The disk fills while train runs: one line with SQLite's cause, and the run ends FAILED
    or, if the store cannot even record that, the line says the run was left RUNNING."""
    folder = stage_folder(tmp_path / "work", small_params(steps=30_000, log_every=100))
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


def test_full_disk_under_the_store_then_repro_recovers(tmp_path):
    """The SQLite store fills its disk mid-run: one line with SQLite's cause, not MLflow's
    SQL dump; dvc.lock records nothing; with space freed, the next `dvc repro` succeeds."""
    project = make_project(tmp_path / "project", small_params())
    store_folder = tmp_path / "store"
    with tmpfs(store_folder, "8m"):
        env = store_env(store_folder)
        first = run(["dvc", "repro", "generate"], project, env)  # creates the store (~1 MB)
        assert first.returncode == 0, first.stdout + first.stderr
        lock = (project / "dvc.lock").read_bytes()
        filler = fill(store_folder)
        done = run(["dvc", "repro"], project, env)
        assert done.returncode != 0
        lines = [line for line in done.stderr.splitlines() if line.startswith("polyfit ")]
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith(f"polyfit train: error: MLflow at {store_of(store_folder)}")
        assert "database or disk is full" in lines[0]
        assert "Traceback" not in done.stdout + done.stderr
        assert "INSERT" not in done.stdout + done.stderr and "[SQL" not in done.stderr
        assert (project / "dvc.lock").read_bytes() == lock  # DVC recorded nothing
        filler.unlink()
        again = run(["dvc", "repro"], project, env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert newest_run(store_of(store_folder), "train").info.status == "FINISHED"
    assert os.path.ismount(store_folder) is False
