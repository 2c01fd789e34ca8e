"""MLflow runs that always end, batched logging, datasets and lookups, through MlflowClient.

The stages use MlflowClient rather than mlflow.start_run: a run here can be continued by a later
process (a resumed training), and logging a whole loss history takes a few batched calls
(log_batch) where the fluent API makes one call per point.
"""

import contextlib
import json
import os
import signal
import socket
import sys
import time
from typing import NamedTuple

from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    LoggedModelInput,
    Metric,
    Param,
    RunStatus,
    RunTag,
)
from mlflow.exceptions import MlflowException

from polyfit.errors import Interrupted, PolyfitError, one_line
from polyfit.tracking.provenance import git_state, machine
from polyfit.tracking.uri import tracking_uri

BATCH_SIZE = 1000  # MLflow's limit of metrics per log_batch call
# How SQLite, PostgreSQL and MySQL refuse a second insert of the same key.
DUPLICATE_KEY_ERRORS = ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry")


class DvcDataset(NamedTuple):
    """A DVC-tracked file as an MLflow dataset: named by its path, digest = the md5 in dvc.lock."""

    path: str
    md5: str
    rows: int

    @property
    def name(self) -> str:
        return self.path

    def entity(self) -> Dataset:
        source = {"path": self.path, "git_commit": git_state()[0], "md5": self.md5}
        profile = {"num_rows": self.rows}
        return Dataset(self.name, self.md5, "dvc", json.dumps(source), profile=json.dumps(profile))


class TrackedRun:
    """One MLflow run, written through MlflowClient (no global 'active run' state)."""

    def __init__(self, client, run_id: str, experiment_id: str):
        self.client, self.run_id, self.experiment_id = client, run_id, experiment_id
        self._logged: dict[str, int] = {}  # steps of each history already in the store

    def log_params(self, params: dict) -> None:
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(
        self, metrics: dict, model_id: str | None = None, dataset: DvcDataset | None = None
    ) -> None:
        """Log at step 0; with model_id (and dataset), the model's page lists them too."""
        now = int(time.time() * 1000)
        on = {"model_id": model_id}
        if dataset is not None:
            on |= {"dataset_name": dataset.name, "dataset_digest": dataset.md5}
        batch = [Metric(key, float(value), now, 0, **on) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_inputs(self, dataset: DvcDataset, context: str, model_id: str | None = None):
        """Record that this run read the dataset (the Dataset column) and the model."""
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
        """The points of `values` (one per step) the store does not hold yet, BATCH_SIZE per call:
        called as a history grows, and again by a process that continues the run."""
        if key not in self._logged:  # a continued run holds the steps logged before it died
            held = self.client.get_metric_history(self.run_id, key)
            self._logged[key] = 1 + max((point.step for point in held), default=-1)
        now = int(time.time() * 1000)
        for first in range(self._logged[key], len(values), BATCH_SIZE):
            chunk = values[first : first + BATCH_SIZE]
            points = [Metric(key, value, now, first + i) for i, value in enumerate(chunk)]
            self.client.log_batch(self.run_id, metrics=points)
        self._logged[key] = max(self._logged[key], len(values))

    def set_tags(self, tags: dict) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


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
def stage_run(
    stage: str, connection: tuple, name: str, params: dict, tags: dict, continues: str = ""
):
    """A run in `connection` (connect()'s client and experiment id) that ends FINISHED, FAILED
    (tagged with why) or KILLED, never left RUNNING. Tagged with where it ran: the git commit,
    the host and process, the CPU and torch's kernels (provenance.py).

    `continues`: the id of a run a killed process left behind, to carry on in, if the store
    holds it; yields (run, whether it continues one).
    """
    client, experiment_id = connection
    # A tracking server rejects tag values that are not strings (SQLite converts them).
    tags = {key: str(value) for key, value in {**provenance_tags(stage), **tags}.items()}
    try:
        run_id = _reopen(client, continues, experiment_id)
        if run_id is None:
            run_id = client.create_run(experiment_id, tags=tags, run_name=name).info.run_id
    except MlflowException as error:  # e.g. the store's disk is full, or it is locked
        raise PolyfitError(f"MLflow at {tracking_uri()} failed: {one_line(error)}") from None
    run = TrackedRun(client, run_id, experiment_id)
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        if run_id == continues:
            run.set_tags(tags)  # this process's pid, for `polyfit runs cleanup`
        else:
            run.log_params(params)
        yield run, run_id == continues
    except KeyboardInterrupt as error:
        if note := _end(client, run_id, "KILLED", str(error) or "interrupted by SIGINT"):
            print(f"polyfit: warning: {note}", file=sys.stderr)
        raise
    except MlflowException as error:  # e.g. the server went away: one line, not a traceback
        note = _end(client, run_id, "FAILED", one_line(error))
        message = f"MLflow at {tracking_uri()} failed: {one_line(error)}"
        raise PolyfitError(message + (f" ({note})" if note else "")) from None
    except BaseException as error:
        if isinstance(error, OSError) and error.filename is None:
            # polyfit's own writes name their file: this came from copying an artifact.
            error.filename = client.get_run(run_id).info.artifact_uri.removeprefix("file://")
        if note := _end(client, run_id, "FAILED", one_line(error)):
            error.add_note(note)  # cli.py prints it on the error's line
        raise
    else:
        _end(client, run_id, "FINISHED")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _reopen(client, run_id: str, experiment_id: str) -> str | None:
    """The run `run_id` back to RUNNING, if this experiment holds it; else None."""
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    if run.info.experiment_id != experiment_id:
        return None
    if run.info.status != "RUNNING":  # e.g. marked KILLED by `polyfit runs cleanup`
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    if reason := run.data.tags.get("failure_reason"):  # that attempt's end is not the run's
        client.set_tag(run_id, "interrupted", reason)
        client.delete_tag(run_id, "failure_reason")
    return run_id


def end_run(client, run_id: str, status: str, reason: str | None = None) -> None:
    """Set a run's final status, tagged with why it ended (failure_reason) unless FINISHED."""
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
