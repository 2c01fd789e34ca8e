"""Which MLflow store the pipeline tracks into, and whether it can be used: a SQLite file at the
repo root, or a tracking server. No MLflow import, so a stage checks this before it loads one."""

import os

import requests

from polyfit.errors import PolyfitError, one_line
from polyfit.paths import project_root

# The stores MLflow 3 tracks into: SQL databases (SQLAlchemy URLs, e.g. postgresql+psycopg2) and
# tracking servers. Its file store (a plain path or file://) is refused for tracking.
SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https")
# GET /health before a run: (connect, read) seconds. A live server answers in milliseconds.
PROBE_TIMEOUT = (3, 3)


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the SQLite store at the real repo root (also for DVC exps)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


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


def probe_store() -> None:
    """Fail in seconds on a URI MLflow cannot use or a tracking server that does not answer."""
    uri = tracking_uri()
    check_uri(uri)
    if is_server(uri):
        probe_server(uri)


def probe_server(uri: str) -> None:
    """Fail in seconds if a tracking server does not answer (down, or accepting and hung).

    Any HTTP answer counts as alive; TLS problems are left to MLflow's own client. Once per
    process and server.
    """
    if uri in _answered:
        return
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
