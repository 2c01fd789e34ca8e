"""What `polyfit ui` and `polyfit serve` share: a quiet MLflow server, a port checked before the
URL is printed, and a stop on Ctrl-C without a traceback. No torch here: the UI starts faster."""

import os
import signal
import socket
import subprocess

from polyfit.errors import PolyfitError, UsageError

STOPS = ("SIGTERM", "SIGHUP")  # besides Ctrl-C: a kill, a closed terminal (SIGHUP: not on Windows)

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
    """Set QUIET_SERVER_ENV for the server this process starts, unless asked for the logs:
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


def serve(command: list[str]) -> None:
    """Run an MLflow server until it ends, or until Ctrl-C or SIGTERM, which stop it with one
    SIGINT. It runs in a session of its own: the terminal's Ctrl-C reaches every process of its
    session, and MLflow forwards its own SIGINT to uvicorn, which answers a second SIGINT with a
    forced exit and a traceback."""
    server = subprocess.Popen(command, start_new_session=True)
    stops = [getattr(signal, name) for name in STOPS if hasattr(signal, name)]
    for stop in stops:
        signal.signal(stop, lambda signum, frame: server.send_signal(signal.SIGINT))
    try:
        code = server.wait()
    except KeyboardInterrupt:
        server.send_signal(signal.SIGINT)
        server.wait()
        return
    if code > 0:  # it ended by itself, having said why in its own log
        raise PolyfitError(f"the MLflow server exited with status {code}")
