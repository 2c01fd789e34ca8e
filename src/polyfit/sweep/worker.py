"""`polyfit worker ADDRESS`: a Dask worker that runs sweep configurations in this clone.

It becomes `dask worker` (exec, so Ctrl-C and SIGTERM reach Dask directly) with one process,
one thread and the resource `polyfit=1` that sweep tasks ask for: one configuration at a time,
and only on polyfit workers. The clone is recorded in the environment the worker inherits
(sweep_task.CLONE_VARIABLE); its name, host:clone, is unique per clone, so the scheduler
refuses a second worker on the same clone.
"""

import os
import sys
from pathlib import Path

import distributed  # noqa: F401 (the cluster extra: without it, cli.py says which to install)

from polyfit.errors import UsageError
from polyfit.sweep.grid import git
from polyfit.sweep.task import CLONE_VARIABLE, worker_label


def command(address: str, host: str | None) -> list[str]:
    """The `dask worker` command line."""
    args = [sys.executable, "-m", "dask", "worker", address]
    args += ["--nthreads", "1", "--nworkers", "1", "--resources", "polyfit=1"]
    args += ["--name", worker_label(), "--no-dashboard"]
    # Dask's HTTP server (health, metrics) binds every interface unless told otherwise.
    return args + (["--host", host, "--dashboard-address", f"{host}:0"] if host else [])


def check_clone(clone: Path) -> None:
    """A worker needs a git clone of the project with an `origin` to fetch commits from."""
    if not (clone / "dvc.yaml").is_file():
        raise UsageError(f"{clone} is not a polyfit clone (no dvc.yaml): start the worker there")
    if git("remote", "get-url", "origin", cwd=str(clone)).returncode != 0:
        raise UsageError(f"{clone} has no git remote 'origin' to fetch the sweep's commits from")


def main(args) -> None:
    address = args.address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not address:
        raise UsageError("give the scheduler address (tcp://HOST:PORT) or DASK_SCHEDULER_ADDRESS")
    clone = Path.cwd().resolve()
    check_clone(clone)
    os.environ[CLONE_VARIABLE] = str(clone)
    # Dask samples every thread's stack every 10 ms for its dashboard, which we turn off anyway.
    os.environ.setdefault("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", "False")
    argv = command(address, args.host)
    print(f"polyfit worker: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    os.execv(sys.executable, argv)
