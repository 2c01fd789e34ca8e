"""Helpers for the failure tests: stage folders, snapshots and child processes to interrupt."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import clean_env, copy_made_store, mlflow_client, write_params

from polyfit import files, paths
from polyfit.tracking.store import _store_lock

LOSS_LINE = re.compile(r"^\d+ \S+$")  # what train prints every log_every steps: "step loss"
# Files a failed or interrupted command may still change: the MLflow store, captured stderr.
NOT_OUTPUTS = {"mlflow.db", "mlflow.db.lock", "stderr.txt"}


def stage_folder(folder: Path, params: dict, store: bool = True) -> Path:
    """A folder stages can run in: project marker, params, data/dataset.pt built in-process and,
    unless `store` is False, a copy of made_store() as its MLflow store."""
    from polyfit.core.data import make_dataset

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dvc.yaml").write_text("stages: {}\n")  # marks the project root
    write_params(folder, params)
    x, y = make_dataset(**params["data"])
    files.write_atomic(folder / paths.DATASET, files.tensors_to_bytes({"x": x, "y": y}))
    if store:
        copy_made_store(folder)
    return folder


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
