"""Everything MLflow: where the store is, runs that always end, batched logging, lookups.

mlflow is imported inside functions: it costs 1.5-2.5 s (with the machine's load), and
commands that track nothing (gate, --help) should not pay for it.
"""

import contextlib
import fcntl
import gc
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures.process import _RemoteTraceback
from pathlib import Path
from typing import NamedTuple

from polyfit.errors import Interrupted, PolyfitError
from polyfit.paths import project_root
from polyfit.provenance import git_state

BATCH_SIZE = 1000  # MLflow's limit of metrics per log_batch call
# Fail fast on an unreachable server (MLflow's defaults retry for minutes), and keep progress
# bars out of stage logs. MLflow has one timeout for connecting and reading, so a request may
# take long (a slow server writing a large log_batch); a server that is down or hung is caught
# by the health probe before the run instead. Values the user set in the environment win.
MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
# GET /health before a run: (connect, read) seconds. A live server answers in milliseconds.
PROBE_TIMEOUT = (3, 3)
# How SQLite, PostgreSQL and MySQL refuse a second insert of the same key.
DUPLICATE_KEY_ERRORS = ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry")


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the SQLite store at the real repo root (also for DVC exps)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def _is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _artifact_location(uri: str) -> str | None:
    """Local artifact folder beside the store; a tracking server chooses its own."""
    return None if _is_server(uri) else (project_root() / "mlartifacts").as_uri()


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise first use of a SQLite store: concurrent schema migrations corrupt each other."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def preload() -> None:
    """Import MLflow's client and store modules, touching no file: a stage does this
    while its torch worker works, before it knows whether its inputs are valid.
    A tracking server is probed first, so a dead one fails the stage in seconds."""
    probe_store()
    from mlflow.tracking import MlflowClient  # noqa: F401

    if tracking_uri().startswith("sqlite:"):
        import mlflow.store.model_registry.sqlalchemy_store
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    # The ~300k objects imported live as long as the process: left to the collector, each full
    # collection scans them all again (~0.15 s, seen inside a 2000-point log_batch).
    gc.freeze()


def probe_store() -> None:
    """Fail in seconds if the store is a tracking server that does not answer."""
    if _is_server(tracking_uri()):
        probe_server(tracking_uri())


def make_client(uri: str):
    """An MlflowClient for `uri` (tracking and model registry), with our env defaults."""
    for name, value in MLFLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    import mlflow
    from mlflow.tracking import MlflowClient

    _quiet_mlflow_logs()
    # The registry resolves a version's models:/ source through the process-wide tracking URI,
    # whose default (./mlflow.db) is another store inside a DVC experiment's temp copy.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, registry_uri=uri)


def _quiet_mlflow_logs() -> None:
    """Failures reach the user as polyfit's one line with the root cause: MLflow's own log
    would add its traceback and the failed SQL (a full disk printed ~200 lines). An explicit
    MLFLOW_LOGGING_LEVEL still wins, for debugging."""
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        for name in ("mlflow", "alembic", "sqlalchemy"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def probe_server(uri: str) -> None:
    """Fail in seconds if a tracking server does not answer (down, or accepting and hung).

    Any HTTP answer counts as alive; TLS problems are left to MLflow's own client. Once per
    process and server: a stage probes early (preload) and on connecting.
    """
    if uri in _answered:
        return
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT)
    except requests.exceptions.SSLError:
        return
    except requests.Timeout:
        connect, read = PROBE_TIMEOUT
        raise PolyfitError(
            f"MLflow tracking store {uri} unusable: no answer to GET /health within "
            f"{connect} s (connect) + {read} s (read)"
        ) from None
    except requests.ConnectionError as error:
        raise PolyfitError(f"MLflow tracking store {uri} unusable: {one_line(error)}") from None
    _answered.add(uri)


_answered: set[str] = set()  # servers that answered the probe in this process


def connect(experiment: str):
    """(client, experiment_id), creating the experiment if needed, race-free."""
    from mlflow.exceptions import MlflowException

    probe_store()
    uri = tracking_uri()
    try:
        with _store_lock(uri):
            client = make_client(uri)
            found = client.get_experiment_by_name(experiment)
            if found is None:
                with contextlib.suppress(MlflowException):  # another process won the race
                    client.create_experiment(experiment, _artifact_location(uri))
                found = client.get_experiment_by_name(experiment)
    except Exception as error:  # any failure here means "no usable store"
        raise PolyfitError(f"MLflow tracking store {uri} unusable: {one_line(error)}") from None
    return client, found.experiment_id


def one_line(error: BaseException) -> str:
    """The root cause's first line: MLflow wraps SQLAlchemy, which wraps sqlite3's
    "database or disk is full" under a paragraph about autoflush and the failed SQL."""
    text = str(_root_cause(error)).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception of a chain (raise ... from, SQLAlchemy's .orig). Our own errors
    are already the user's line; the compute worker's traceback text is no cause."""
    seen = {id(error)}
    while not isinstance(error, PolyfitError):
        inner = getattr(error, "orig", None) or error.__cause__ or error.__context__
        if isinstance(inner, _RemoteTraceback):
            return error
        if not isinstance(inner, BaseException) or id(inner) in seen or not str(inner).strip():
            return error
        seen.add(id(inner))
        error = inner
    return error


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
    return tags | experiment_tags()


def experiment_tags() -> dict:
    """{'dvc_exp': name} inside a DVC experiment, else {}."""
    experiment = os.environ.get("DVC_EXP_NAME")
    return {"dvc_exp": experiment} if experiment else {}


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def stage_run(
    stage: str, connection: tuple, name: str, params: dict, tags: dict, started: float | None = None
):
    """A run in `connection` (connect()'s client and experiment id) that ends FINISHED, FAILED
    (tagged with why) or KILLED, never left RUNNING.
    It starts at `started` (time.time()) if given: a stage may work before opening its run."""
    client, experiment_id = connection
    from mlflow.exceptions import MlflowException

    # A tracking server rejects tag values that are not strings (SQLite converts them).
    tags = {key: str(value) for key, value in {**provenance_tags(stage), **tags}.items()}
    try:
        start_time = None if started is None else int(started * 1000)
        info = client.create_run(experiment_id, start_time, tags, run_name=name).info
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
