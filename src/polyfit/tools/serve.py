"""`polyfit serve`: the champion (or any MLflow model) over HTTP, with MLflow's own server.

    curl -X POST http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
         -d '{"inputs": [[0.5], [1.0]]}'    ->  {"predictions": [0.417..., 0.764...]}

Rows by position ({"inputs": [[...], ...]}), or named columns in any order
({"dataframe_split": {"columns": [...], "data": [...]}}): tracking/serving.py.
"""

import os
import socket
import sys

from polyfit import paths
from polyfit.errors import UsageError
from polyfit.params import load_params
from polyfit.tracking import store
from polyfit.tracking.model import resolve
from polyfit.tracking.uri import tracking_uri

# What MLflow's servers (`mlflow models serve`, `mlflow ui`) print besides the URL and errors:
# INFO lines, uvicorn's startup and access log, the artifact download bar, and libraries'
# deprecation warnings about each other. Values the user set in the environment win.
QUIET_SERVER_ENV = {
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "UVICORN_LOG_LEVEL": "warning",  # uvicorn reads its options from UVICORN_* variables
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "PYTHONWARNINGS": "ignore",  # inherited by uvicorn's worker processes
}


def quiet_server_env(verbose: bool) -> None:
    """Set QUIET_SERVER_ENV for the server this process execs, unless asked for the logs:
    --verbose, or an MLFLOW_LOGGING_LEVEL the user set (as for the stages)."""
    if not verbose and "MLFLOW_LOGGING_LEVEL" not in os.environ:
        for name, value in QUIET_SERVER_ENV.items():
            os.environ.setdefault(name, value)


def check_port(host: str, port: int) -> None:
    """Fail in one line if the server could not listen there: it would say so only after the URL
    we print, in a log line of its own."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except (OSError, OverflowError) as error:  # in use, an unknown host, a port > 65535
            reason = (getattr(error, "strerror", None) or str(error)).rstrip(".")
            raise UsageError(f"cannot listen on {host}:{port}: {reason}; choose --port") from None


def main(args) -> None:
    check_port(args.host, args.port)
    model = args.model or f"models:/{load_params(paths.PARAMS).mlflow.registered_model}@champion"
    resolve(store.make_client(tracking_uri()), model)  # one line that says what to do
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri()  # the store the stages log to
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # the model is code + tensors
    quiet_server_env(args.verbose)
    command = ["mlflow", "models", "serve", "-m", model, "--env-manager", "local"]
    command += ["--host", args.host, "--port", str(args.port)]
    print(f"serving {model} at http://{args.host}:{args.port}/invocations", flush=True)
    # This venv's mlflow, whose scoring server starts `uvicorn` by name
    os.execve(sys.executable, [sys.executable, "-m", *command], paths.venv_first(os.environ))
