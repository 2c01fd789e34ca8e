"""Section "Sweeps": one `polyfit sweep` on the local DVC queue (--jobs 2) and on two Dask
`polyfit worker`s on this machine, per configuration, against train + evaluate run bare."""

import contextlib
import itertools
import os
import signal
import socket
import subprocess
from pathlib import Path

from common import (
    PYTHON,
    SCRATCH,
    Row,
    Section,
    child_env,
    fresh_clone,
    interleave,
    median,
    ratio,
    run,
    scratch,
    spread,
    target_row,
)

TARGET = 1.15  # a Dask sweep may take 15% longer than the local queue's
WORKERS = 2


def _prepare() -> tuple[Path, Path]:
    """A reproduced, committed clone pushed to a bare origin, with a directory DVC remote."""
    project, origin = fresh_clone("sweeps"), SCRATCH / "origin.git"
    for command in (
        ["dvc", "repro"],
        ["dvc", "remote", "add", "-d", "storage", str(SCRATCH / "dvc-remote")],
        ["git", "commit", "-qam", "reproduced, with a DVC remote"],
        ["dvc", "push", "-q"],
        ["git", "init", "-q", "--bare", "-b", "main", str(origin)],
        ["git", "remote", "set-url", "origin", str(origin)],
        ["git", "push", "-q", "origin", "HEAD:main"],
    ):
        run(command, project)
    return project, origin


@contextlib.contextmanager
def _started(args: list[str], cwd: Path, **env: str):
    """A long-lived process, its output in cwd/process.log, stopped (SIGTERM) at the end."""
    with open(cwd / "process.log", "w") as log:
        output = {"stdout": log, "stderr": subprocess.STDOUT}
        process = subprocess.Popen(
            args, cwd=cwd, env=child_env(**env), start_new_session=True, **output
        )
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):  # its group: dask's nanny and worker too
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def _cluster(stack: contextlib.ExitStack, origin: Path, store: str) -> str:
    """A scheduler and WORKERS `polyfit worker`s, each in a clone set up with `dvc pull`,
    tracking to `store`; the scheduler's address once every worker has joined."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    scheduler = ["dask", "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1]]
    scheduler += ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    stack.enter_context(_started(scheduler, scratch("scheduler")))
    for index in range(WORKERS):
        clone = SCRATCH / f"worker-{index}"
        run(["git", "clone", "-q", str(origin), str(clone)])
        run(["dvc", "pull", "-q"], clone)
        worker = ["polyfit", "worker", address, "--host", "127.0.0.1"]
        stack.enter_context(_started(worker, clone, MLFLOW_TRACKING_URI=store))
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(WORKERS, timeout=120)
    return address


def sweeps(rounds: int, configurations: int) -> Section:
    project, origin = _prepare()
    rates = [0.0005 * (index + 1) for index in range(configurations)]
    sweep = itertools.count()

    def timed_sweep(*args: str) -> float:
        number = next(sweep)  # a new grid each time: DVC's run cache would skip a repeat
        grid = "train.lr=" + ",".join(f"{lr + 1e-7 * number:.7g}" for lr in rates)
        done = run(["polyfit", "sweep", "--name", f"s{number}", "-S", grid, *args], project)
        run(["dvc", "queue", "stop"], project, check=False)  # idle queue workers would compete
        return done.seconds

    with contextlib.ExitStack() as stack:
        address = _cluster(stack, origin, f"sqlite:///{project / 'mlflow.db'}")
        walls = interleave(
            rounds,
            {
                "local": lambda: timed_sweep("--jobs", str(WORKERS)),
                "dask": lambda: timed_sweep("--scheduler", address),
            },
        )
    stages = [[PYTHON, "-m", "polyfit", stage] for stage in ("train", "evaluate")]
    bare = [sum(run(stage, project).seconds for stage in stages) for _ in range(rounds)]
    section = Section(f"Sweeps ({configurations} configurations, {WORKERS} workers)")
    labels = {"local": f"local queue, `--jobs {WORKERS}`", "dask": f"Dask, {WORKERS} workers"}
    for name, label in labels.items():
        each = [WORKERS * wall / configurations for wall in walls[name]]
        beyond = f"{median(each) - median(bare):.1f} s beyond train + evaluate"
        section.rows += [
            Row(f"{label}: the sweep", spread(walls[name], digits=1)),
            Row(f"{label}: per configuration and worker", f"{spread(each, digits=1)}, {beyond}"),
        ]
    section.rows += [
        target_row("Dask / local queue", ratio(walls["dask"], walls["local"]), TARGET),
        Row("train + evaluate as bare processes (`python -m polyfit`)", spread(bare, digits=1)),
    ]
    section.notes = [
        f"{rounds} round(s), local and Dask alternating, of `polyfit sweep -S train.lr=...` over "
        f"{configurations} learning rates (2000 steps each), from the command's start to its "
        "table, on a clone reproduced once, so each configuration runs train and evaluate.",
        "Dask: `dask scheduler` and the workers on 127.0.0.1, each worker in its own clone (set "
        "up beforehand with `dvc pull`), a bare git origin and a directory DVC remote on this "
        "disk; both paths track to the clone's SQLite store.",
        "Per configuration and worker = workers x wall time / configurations; beyond train + "
        "evaluate: what DVC, the queue or Dask, git and the push add to each.",
    ]
    return section
