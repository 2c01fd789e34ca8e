"""Real processes for scale-out tests, all on 127.0.0.1: a moto S3 endpoint, a Dask scheduler,
`polyfit worker`s in their own clones, and a bare git repository as origin; and a sweep's train
stage caught mid-training, to kill it there."""

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from conftest import BIN, clean_env, dvc, make_project, run
from servers import free_port, stop_server

BUCKET = "polyfit"
# moto accepts any key; real credentials would come from the environment the same way.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "polyfit-test",
    "AWS_SECRET_ACCESS_KEY": "polyfit-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Until something accepts connections on 127.0.0.1:port; fail with the log if it dies."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"{process.args[0]} exited {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.3)
    pytest.fail(f"nothing listens on {port} after {timeout} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def background(args: list[str], log: Path, cwd: Path | None = None, env: dict | None = None):
    """A process in its own process group, output to `log`; the whole group stopped on exit."""
    with open(log, "w") as output:
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env=env or clean_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_server(process, grace=10)


@contextlib.contextmanager
def moto_s3(folder: Path):
    """A moto S3 endpoint with one bucket; yields its URL."""
    import boto3

    port = free_port()
    log = folder / "moto.log"
    with background([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], log) as moto:
        wait_for_port(port, moto, log)
        url = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=url, **_boto_credentials()).create_bucket(Bucket=BUCKET)
        yield url


def _boto_credentials() -> dict:
    return {
        "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS_ENV["AWS_DEFAULT_REGION"],
    }


def s3_keys(url: str, prefix: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=url, **_boto_credentials())
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


@contextlib.contextmanager
def dask_scheduler(folder: Path):
    """`dask scheduler` on a free loopback port (its HTTP server too); yields (address, process)."""
    port = free_port()
    args = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    log = folder / "scheduler.log"
    with background(args, log) as scheduler:
        wait_for_port(port, scheduler, log)
        yield f"tcp://127.0.0.1:{port}", scheduler


def git(args: list[str], cwd: Path) -> str:
    done = run(["git", *args], cwd)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


def origin_with_project(folder: Path, params: dict, s3_url: str | None) -> Path:
    """A bare origin and a pushed project whose committed DVC remote is the S3 bucket."""
    origin = folder / "origin.git"
    git(["init", "-q", "--bare", "-b", "main", str(origin)], folder)
    project = make_project(folder / "project", params)
    if s3_url:
        dvc(project, "remote", "add", "-d", "storage", f"s3://{BUCKET}/dvc")
        dvc(project, "remote", "modify", "storage", "endpointurl", s3_url)
        git(["commit", "-qam", "DVC remote on S3"], project)
    git(["remote", "add", "origin", str(origin)], project)
    git(["push", "-q", "origin", "main"], project)
    return project


@contextlib.contextmanager
def polyfit_worker(origin: Path, clone: Path, scheduler: str, env: dict):
    """A clone of origin running `polyfit worker`; yields the process (leader of its group)."""
    git(["clone", "-q", str(origin), str(clone)], clone.parent)
    args = [sys.executable, "-m", "polyfit", "worker", scheduler, "--host", "127.0.0.1"]
    log = clone.parent / f"{clone.name}.log"
    with background(args, log, cwd=clone, env=env) as worker:
        yield worker


def listening_hosts(pid: int) -> set[str]:
    """The addresses that a process and its descendants listen on."""
    import psutil

    root = psutil.Process(pid)
    hosts = set()
    for process in [root, *root.children(recursive=True)]:
        for connection in process.net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN:
                hosts.add(connection.laddr.ip)
    return hosts


def wait_for_workers(scheduler: str, count: int, timeout: float = 120) -> None:
    from distributed import Client

    with Client(scheduler, timeout=30) as client:
        client.wait_for_workers(count, timeout=timeout)


def train_process(under: Path, names: set[str], timeout: float = 300) -> tuple[psutil.Process, str]:
    """A `python -m polyfit train` that DVC runs for one of the experiments `names` in a folder
    under `under` (a queue's or a worker's temporary copy); (the process, its experiment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in psutil.process_iter(["cmdline"]):
            if (process.info["cmdline"] or [])[-3:] != ["-m", "polyfit", "train"]:
                continue
            with contextlib.suppress(psutil.Error):
                name = process.environ().get("DVC_EXP_NAME")
                if name in names and under in Path(process.cwd()).parents:
                    return process, name
        time.sleep(0.05)
    pytest.fail(f"no train stage of {sorted(names)} ran under {under} within {timeout} s")


SLICE = 0.02  # seconds a caught process runs between two looks at it


def stop_when(process: psutil.Process, ready: Callable[[], bool], timeout: float = 300) -> None:
    """Let `process` run in slices of SLICE seconds, stopped (SIGSTOP) while `ready()` is asked
    after each, until it answers yes: the process is then left stopped, as `ready` saw it. So a
    test can kill a training between two given points however fast or slow the machine is."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            process.suspend()
            try:
                if ready():
                    return
                assert time.monotonic() < deadline, f"not ready within {timeout} s"
            except BaseException:
                process.resume()  # a failing test leaves no stopped process behind
                raise
            process.resume()
            time.sleep(SLICE)
    except psutil.NoSuchProcess:
        pytest.fail(f"{' '.join(process.info['cmdline'])} ended before it was ready to be killed")
