"""MLflow runs that always end, batched logging, datasets and lookups, through MlflowClient."""

import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from polyfit.errors import Interrupted, PolyfitError
from polyfit.tracking.provenance import git_state, machine
from polyfit.tracking.store import one_line, tracking_uri

BATCH_SIZE = 1000  # MLflow's limit of metrics per log_batch call
# How SQLite, PostgreSQL and MySQL refuse a second insert of the same key.
DUPLICATE_KEY_ERRORS = ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry")


class TrackedRun:
    """One MLflow run, written through MlflowClient (no global 'active run' state)."""

    def __init__(self, client, run_id: str, experiment_id: str):
        self.client, self.run_id, self.experiment_id = client, run_id, experiment_id

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(
        self, metrics: dict, model_id: str | None = None, dataset: "DvcDataset | None" = None
    ) -> None:
        """Log at step 0; with model_id (and dataset), the model's page lists them too."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        on = {"model_id": model_id}
        if dataset is not None:
            on |= {"dataset_name": dataset.name, "dataset_digest": dataset.md5}
        batch = [Metric(key, float(value), now, 0, **on) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_inputs(self, dataset: "DvcDataset", context: str, model_id: str | None = None):
        """Record that this run read the dataset (the Dataset column) and the model."""
        from mlflow.entities import DatasetInput, InputTag, LoggedModelInput
        from mlflow.exceptions import MlflowException

        used = DatasetInput(dataset.entity(), [InputTag("mlflow.data.context", context)])
        models = [LoggedModelInput(model_id)] if model_id else None
        try:
            self.client.log_inputs(self.run_id, datasets=[used], models=models)
        except MlflowException as error:
            # Two runs logging the same new dataset at once (a sweep's workers) race to insert
            # it, and the store refuses the second insert. It exists now: link to it.
            if not any(key in str(error) for key in DUPLICATE_KEY_ERRORS):
                raise
            self.client.log_inputs(self.run_id, datasets=[used], models=models)

    def log_history(self, key: str, values: list[float]) -> None:
        """One point per step, BATCH_SIZE points per call (per-step calls cost 25x training)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for start in range(0, len(values), BATCH_SIZE):
            chunk = values[start : start + BATCH_SIZE]
            points = [Metric(key, v, now, start + i) for i, v in enumerate(chunk)]
            self.client.log_batch(self.run_id, metrics=points)

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_bytes(self, name: str, content: bytes, folder: str) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / name
            path.write_bytes(content)
            self.client.log_artifact(self.run_id, str(path), folder)


class DvcDataset(NamedTuple):
    """A DVC-tracked file as an MLflow dataset: named by its path, digest = the md5 in dvc.lock."""

    path: str
    md5: str
    rows: int

    @property
    def name(self) -> str:
        return self.path

    def entity(self):
        from mlflow.entities import Dataset

        source = {"path": self.path, "git_commit": git_state()[0], "md5": self.md5}
        profile = {"num_rows": self.rows}
        return Dataset(self.name, self.md5, "dvc", json.dumps(source), profile=json.dumps(profile))


def run_name(stage: str, detail: str) -> str:
    """'train RMSprop lr=0.001 [exp-name]': readable in the MLflow run list."""
    experiment = os.environ.get("DVC_EXP_NAME")
    return f"{stage} {detail}" + (f" [{experiment}]" if experiment else "")


def provenance_tags(stage: str) -> dict:
    commit, dirty = git_state()
    tags = {
        "stage": stage,
        "mlflow.source.name": f"polyfit {stage}",
        "mlflow.source.type": "LOCAL",
        "mlflow.source.git.commit": commit,
        "git_dirty": dirty,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    return tags | machine() | experiment_tags()


def experiment_tags() -> dict:
    """{'dvc_exp': name} inside a DVC experiment, else {}."""
    experiment = os.environ.get("DVC_EXP_NAME")
    return {"dvc_exp": experiment} if experiment else {}


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def stage_run(stage: str, connection: tuple, name: str, params: dict, tags: dict):
    """A run in `connection` (connect()'s client and experiment id) that ends FINISHED, FAILED
    (tagged with why) or KILLED, never left RUNNING. Tagged with where it ran: the git commit,
    the host and process, the CPU and torch's kernels (provenance.py)."""
    client, experiment_id = connection
    from mlflow.exceptions import MlflowException

    # A tracking server rejects tag values that are not strings (SQLite converts them).
    tags = {key: str(value) for key, value in {**provenance_tags(stage), **tags}.items()}
    try:
        info = client.create_run(experiment_id, tags=tags, run_name=name).info
    except MlflowException as error:  # e.g. the store's disk is full, or it is locked
        raise PolyfitError(f"MLflow at {tracking_uri()} failed: {one_line(error)}") from None
    run = TrackedRun(client, info.run_id, experiment_id)
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        run.log_params(params)
        yield run
    except KeyboardInterrupt as error:
        if note := _end(client, info.run_id, "KILLED", str(error) or "interrupted by SIGINT"):
            print(f"polyfit: warning: {note}", file=sys.stderr)
        raise
    except MlflowException as error:  # e.g. the server went away: one line, not a traceback
        note = _end(client, info.run_id, "FAILED", one_line(error))
        message = f"MLflow at {tracking_uri()} failed: {one_line(error)}"
        raise PolyfitError(message + (f" ({note})" if note else "")) from None
    except BaseException as error:
        if isinstance(error, OSError) and error.filename is None:
            # polyfit's own writes name their file: this came from copying an artifact.
            error.filename = info.artifact_uri.removeprefix("file://")
        if note := _end(client, info.run_id, "FAILED", one_line(error)):
            error.add_note(note)  # cli.py prints it on the error's line
        raise
    else:
        _end(client, info.run_id, "FINISHED")
    finally:
        signal.signal(signal.SIGTERM, previous)


def end_run(client, run_id: str, status: str, reason: str | None = None) -> None:
    """Set a run's final status, tagged with why it ended (failure_reason) unless FINISHED."""
    from mlflow.entities import RunTag

    if reason is not None:
        client.log_batch(run_id, tags=[RunTag("failure_reason", reason)])
    client.set_terminated(run_id, status)


def _end(client, run_id: str, status: str, reason: str | None = None) -> str | None:
    """Best effort: if the store itself is gone, return why (the original error matters more)."""
    try:
        end_run(client, run_id, status, reason)
    except Exception as error:
        return f"run {run_id} left RUNNING: {one_line(error)}"
    return None


def find_trained_model(client, experiment_id: str, model_sha256: str):
    """The newest LoggedModel of this exact model file (same DVC experiment first), or None."""
    base = f"tags.model_sha256 = '{model_sha256}'"
    filters = [base]
    if experiment := os.environ.get("DVC_EXP_NAME"):
        filters.insert(0, f"{base} AND tags.dvc_exp = '{experiment}'")
    for filter_string in filters:
        models = client.search_logged_models(
            [experiment_id],
            filter_string=filter_string,
            order_by=[{"field_name": "creation_timestamp", "ascending": False}],
            max_results=1,
        )
        if models:
            return models[0]
    return None
