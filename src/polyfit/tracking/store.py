"""A client for the MLflow store the pipeline tracks into (tracking/uri.py says which), and the
experiment its runs go in."""

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from polyfit.errors import PolyfitError, one_line
from polyfit.paths import project_root
from polyfit.tracking.uri import check_uri, is_server, probe_store, tracking_uri

with warnings.catch_warnings():  # where fcntl is missing it warns that it uses a lock file
    warnings.simplefilter("ignore")
    from filelock import FileLock, Timeout

LOCK_TIMEOUT = 120  # seconds: migrating a new store takes a few

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


def make_client(uri: str) -> MlflowClient:
    """An MlflowClient for `uri` (tracking and model registry), with our env defaults."""
    check_uri(uri)
    for name, value in MLFLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    _quiet_mlflow_logs()
    # The registry resolves a version's models:/ source through the process-wide tracking URI,
    # whose default (./mlflow.db) is another store inside a DVC experiment's temp copy.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, registry_uri=uri)


def _quiet_mlflow_logs() -> None:
    """Failures reach the user as polyfit's one line with the root cause: MLflow's own log
    would add its traceback and the failed SQL (hundreds of lines for a full disk). An explicit
    MLFLOW_LOGGING_LEVEL still wins, for debugging."""
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        for name in ("mlflow", "alembic", "sqlalchemy"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def artifact_location(uri: str) -> str | None:
    """Local artifact folder beside the store; a tracking server chooses its own."""
    return None if is_server(uri) else (project_root() / "mlartifacts").as_uri()


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise first use of a SQLite store: concurrent schema migrations corrupt each other."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    lock = database.with_name(database.name + ".lock")
    try:
        with FileLock(lock, timeout=LOCK_TIMEOUT):
            yield
    except Timeout:
        raise PolyfitError(
            f"{lock}: held for over {LOCK_TIMEOUT} s by another process; if none is running, "
            "delete the file"
        ) from None


def _create(client, experiment: str, uri: str):
    """Create the experiment; if that fails, it is because another process just did, unless the
    store refuses to write (a full disk): then that failure."""
    try:
        client.create_experiment(experiment, artifact_location(uri))
    except MlflowException:
        if found := client.get_experiment_by_name(experiment):
            return found
        raise
    return client.get_experiment_by_name(experiment)


def connect(experiment: str) -> tuple[MlflowClient, str]:
    """(client, experiment_id), creating the experiment if needed, race-free."""
    probe_store()
    uri = tracking_uri()
    try:
        with _store_lock(uri):
            client = make_client(uri)
            found = client.get_experiment_by_name(experiment) or _create(client, experiment, uri)
    except Exception as error:  # any failure here means "no usable store"
        raise PolyfitError(f"MLflow tracking store {uri} unusable: {one_line(error)}") from None
    return client, found.experiment_id
