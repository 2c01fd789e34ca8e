"""Where the MLflow store is, and a client for it: a SQLite file at the repo root, or a server.

mlflow is imported inside functions: it costs 1.5-2.5 s, and commands that track nothing
(gate, --help) should not pay for it.
"""

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from polyfit.errors import PolyfitError
from polyfit.paths import project_root

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


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the SQLite store at the real repo root (also for DVC exps)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


# The stores MLflow 3 tracks into: SQL databases (SQLAlchemy URLs, e.g. postgresql+psycopg2) and
# tracking servers. Its file store (a plain path or file://) is refused for tracking.
SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https")


def check_uri(uri: str) -> None:
    """Fail in one line on a URI MLflow would refuse with a paragraph, or with a bare KeyError."""
    scheme = uri.partition("://")[0].split("+")[0].lower() if "://" in uri else ""
    if uri.lower() in ("databricks", "databricks-uc"):  # MLflow's names for Databricks' store
        scheme = "databricks"
    if scheme in ("", "file"):
        reason = "a path means MLflow's file store, which MLflow 3 refuses for tracking"
    elif scheme not in SCHEMES:
        reason = f"unsupported scheme '{scheme}'"
    else:
        return
    raise PolyfitError(
        f"MLflow tracking store {uri} unusable: {reason}; "
        "use sqlite:///PATH/mlflow.db or a server's http://HOST:PORT"
    )


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _artifact_location(uri: str) -> str | None:
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
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def probe_store() -> None:
    """Fail in seconds on a URI MLflow cannot use or a tracking server that does not answer."""
    uri = tracking_uri()
    check_uri(uri)
    if is_server(uri):
        probe_server(uri)


def make_client(uri: str):
    """An MlflowClient for `uri` (tracking and model registry), with our env defaults."""
    check_uri(uri)
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
    process and server.
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
    except requests.RequestException as error:  # refused, reset, or a URL it cannot parse
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
    are already the user's line."""
    seen = {id(error)}
    while not isinstance(error, PolyfitError):
        inner = getattr(error, "orig", None) or error.__cause__ or error.__context__
        if not isinstance(inner, BaseException) or id(inner) in seen or not str(inner).strip():
            return error
        seen.add(id(inner))
        error = inner
    return error
