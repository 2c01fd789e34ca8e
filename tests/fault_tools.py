"""Helpers for the failure tests: stage folders on the table, snapshots, `polyfit` in this
process, child processes to interrupt, and small tmpfs mounts to fill."""

import contextlib
import errno
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import (
    TABLE,
    TABLE_FEATURES,
    clean_env,
    copy_made_store,
    mlflow_client,
    table_params,
    write_params,
    write_table,
)

from polyfit import files, paths
from polyfit.core.data import from_csv
from polyfit.core.model import build_model
from polyfit.tracking.store import _store_lock

LOSS_LINE = re.compile(r"^\d+ \S+$")  # what train prints every log_every steps: "step loss"
# Files a failed or interrupted command may still change: the MLflow store, captured stderr.
NOT_OUTPUTS = {"mlflow.db", "mlflow.db.lock", "stderr.txt"}


def stage_folder(
    folder: Path, params: dict | None = None, store: bool = True, table_seed: int = 0
) -> Path:
    """A folder stages can run in: project marker, params (default table_params()), the table
    and generate's data/train.pt and data/held_out.pt built in-process from it and, unless
    `store` is False, a copy of made_store() as its MLflow store."""
    params = params or table_params()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dvc.yaml").write_text("stages: {}\n")  # marks the project root
    write_params(folder, params)
    write_table(folder / TABLE, seed=table_seed)
    csv = params["data"]["csv"] | {"path": str(folder / params["data"]["csv"]["path"])}
    for path, table in zip((paths.TRAIN_DATA, paths.HELD_OUT_DATA), from_csv(**csv), strict=True):
        files.write_atomic(folder / path, files.table_bytes(table))
    if store:
        copy_made_store(folder)
    return folder


def repo_model(params: dict | None = None):
    """The model params' model block describes (the repo's own by default), for the table."""
    return build_model((params or table_params())["model"], len(TABLE_FEATURES))


def write_model(folder: Path, params: dict | None = None) -> None:
    """A valid models/model.pt: the freshly built model's state_dict."""
    files.write_atomic(folder / paths.MODEL, files.to_bytes(repo_model(params).state_dict()))


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
    """The URI of <folder>/mlflow.db."""
    return f"sqlite:///{folder / 'mlflow.db'}"


def store_env(folder: Path, **extra: str) -> dict:
    """Child environment whose MLflow store is <folder>/mlflow.db, unless `extra` names one."""
    return clean_env(**{"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", **extra})


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, except the MLflow store and captured output, which may change."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in NOT_OUTPUTS and "mlartifacts" not in path.parts
    }


def recorded(project: Path) -> dict:
    """What dvc.lock records of the stages that write outputs: `check` records its params
    whenever they pass, also in a `dvc repro` that fails or is interrupted after it."""
    stages = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    return {name: stage for name, stage in stages.items() if name != "check"}


class Child:
    """A command whose stdout is read by a thread, so a test can wait for a line with a timeout."""

    def __init__(self, args: list[str], cwd: Path, env: dict, new_session: bool = False):
        self.stderr_path = cwd / "stderr.txt"
        self.store = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{cwd / 'mlflow.db'}"
        self.lines: list[str] = []
        self.loss_lines = 0
        self._new_line = threading.Condition()
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(
                args,
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=new_session,
                # Ctrl-C must reach the child even when pytest itself runs in the background.
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            if LOSS_LINE.match(line.strip()):
                with self._new_line:
                    self.loss_lines += 1
                    self._new_line.notify_all()

    def _wait_for_loss_lines(self, count: int, timeout: float) -> None:
        with self._new_line:
            if not self._new_line.wait_for(lambda: self.loss_lines >= count, timeout):
                self.process.kill()
                raise AssertionError(f"not {count} loss lines within {timeout} s: {self.finish()}")

    def wait_for_training(self, timeout: float = 120) -> None:
        """Block until training runs inside an open MLflow run."""
        self._wait_for_loss_lines(1, timeout)
        with _store_lock(self.store):  # the stage may be creating it: two migrations collide
            client = mlflow_client(self.store)  # opens (or creates) the store
        deadline = time.monotonic() + timeout
        query = "tags.stage = 'train' and attributes.status = 'RUNNING'"
        while not [
            run
            for experiment in client.search_experiments()
            for run in client.search_runs([experiment.experiment_id], query)
        ]:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.process.kill()
                raise AssertionError(f"no RUNNING train run in {self.store}: {self.finish()}")
            time.sleep(0.1)
        # Two more lines: the stage is past opening its run (a signal that lands while Python
        # runs a weakref callback is lost, and opening a run runs many) and waits for training.
        self._wait_for_loss_lines(self.loss_lines + 2, timeout)

    def signal(self, signum: int, group: bool = False) -> None:
        """Send `signum` to the child, or to its whole session as a terminal's Ctrl-C does."""
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) once the child has exited."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout)
        return self.process.returncode, "".join(self.lines), self.stderr_path.read_text()


def polyfit_child(command: str, cwd: Path, env: dict) -> Child:
    return Child([sys.executable, "-m", "polyfit", command], cwd, env)
