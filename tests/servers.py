"""Real servers for tests: loopback ports, and an MLflow server started by scripts/server.sh."""

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import REPO, clean_env

SERVER_SCRIPT = REPO / "scripts" / "server.sh"  # what `make server` runs


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def closed_port():
    """A loopback port that is bound but not listening: connections are refused at once."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


@contextlib.contextmanager
def hanging_up_server():
    """A loopback port that accepts each connection, reads the request and hangs up without an
    answer. Yields (port, connections): connections[0] counts the requests made so far."""
    connections = [0]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)

        def serve():
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:  # the listener was closed: the block is over
                    return
                with connection:
                    connections[0] += 1
                    connection.recv(65536)

        threading.Thread(target=serve, daemon=True).start()
        yield listener.getsockname()[1], connections
        listener.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def mlflow_server(
    folder: Path,
    backend_store_uri: str | None = None,
    artifacts_destination: Path | None = None,
    log: Path | None = None,
    workers: int = 1,
    **env: str,
):
    """scripts/server.sh on a free 127.0.0.1 port; yields (url, process), stops it on exit.

    Runs go to `backend_store_uri` (default a SQLite file in `folder`), artifacts to
    `artifacts_destination` (default folder/artifacts), output to `log` (default
    folder/server.log); `env` adds settings such as basic auth.
    """
    port = free_port()
    env = clean_env(
        HOST="127.0.0.1",
        PORT=str(port),
        MLFLOW_BACKEND_STORE_URI=backend_store_uri or f"sqlite:///{folder / 'server.db'}",
        MLFLOW_ARTIFACTS_DESTINATION=str(artifacts_destination or folder / "artifacts"),
        **env,
    )
    log = log or folder / "server.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            ["bash", str(SERVER_SCRIPT), "--workers", str(workers)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown can stop all of it
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, server, log)
        yield url, server
    finally:
        stop_server(server)


def wait_until_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 180):
    """Poll GET /health until it answers 200; fail with the server's log if it dies or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited {server.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"mlflow server not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def stop_server(server: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM the server's process group (mlflow, uvicorn, workers); SIGKILL what lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        server.poll()  # reap the leader, or its zombie keeps the group alive
        try:
            os.killpg(server.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    kill_server(server)


def kill_server(server: subprocess.Popen) -> None:
    """SIGKILL the server's whole process group at once, as a crash or a pulled cable would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=10)


@contextlib.contextmanager
def hung_server():
    """A loopback port that accepts TCP connections (the kernel completes the handshake) and
    never answers: a server stuck in a deadlock or a dead backend behind a live socket."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@contextlib.contextmanager
def delaying_proxy(upstream: str, delay: float, min_body: int):
    """An HTTP proxy to `upstream` that holds each request with a body of `min_body` bytes or
    more for `delay` seconds before forwarding it: a slow but alive server. Yields its URL."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def _forward(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if len(body) >= min_body:
                time.sleep(delay)
            skip = {"host", "content-length", "connection", "accept-encoding"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            answer = requests.request(
                self.command, upstream + self.path, headers=headers, data=body, timeout=60
            )
            self.send_response(answer.status_code)
            drop = {"content-length", "content-encoding", "transfer-encoding", "connection"}
            for key, value in answer.headers.items():
                if key.lower() not in drop:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, *args):  # keep test output clean
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{proxy.server_address[1]}"
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(10)
