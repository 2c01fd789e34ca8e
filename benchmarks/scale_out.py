"""Scale-out: one 8-configuration `polyfit sweep`, on the local DVC queue (-j 2) and on a
2-worker Dask cluster on this machine, against train + evaluate run bare."""

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from timing import (
    BIN,
    Row,
    Section,
    child_env,
    fresh_clone,
    median,
    run,
    scratch,
    spread,
    verdict,
)

LEARNING_RATES = [0.0005 + 0.0005 * i for i in range(8)]  # 8: the full bench stays ~15 min
TARGET = 1.15  # the Dask path's wall time may exceed the local queue's by 15% at most
BARE_REPEATS = 3
ROUNDS = 2  # local and Dask alternate, so a change in the machine's load hits both


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _grid(sweep: int) -> list[str]:
    """The learning rates, shifted by 1e-7 per sweep: DVC's run cache would skip a repeat."""
    return ["-S", "train.lr=" + ",".join(f"{lr + 1e-7 * sweep:.7g}" for lr in LEARNING_RATES)]


def _timed_sweep(project: Path, sweep: int, name: str, *args: str) -> float:
    started = time.perf_counter()
    run(["polyfit", "sweep", "--name", name, *_grid(sweep), *args], project)
    return time.perf_counter() - started


def _bare_stages(project: Path) -> list[float]:
    """train + evaluate as processes, without DVC: the per-configuration work itself."""
    seconds = []
    for _ in range(BARE_REPEATS):
        started = time.perf_counter()
        run(["python", "-m", "polyfit", "train"], project)
        run(["python", "-m", "polyfit", "evaluate"], project)
        seconds.append(time.perf_counter() - started)
    return seconds


@contextlib.contextmanager
def _started(args: list[str], cwd: Path, log: Path, **env: str):
    with open(log, "w") as output:
        process = subprocess.Popen(
            args, cwd=cwd, env=child_env(**env), stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _dask_cluster(stack, folder: Path, origin: Path, store: str) -> str:
    """A scheduler and two `polyfit worker`s, each in a clone whose cache holds the baseline,
    tracking to `store` (the local path's store: the same two writers on it)."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port)]
    scheduler += ["--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    stack.enter_context(_started(scheduler, folder, folder / "scheduler.log"))
    for name in ("worker-a", "worker-b"):
        clone = folder / name
        run(["git", "clone", "-q", str(origin), str(clone)], folder)
        run(["dvc", "pull", "-q"], clone)  # a worker machine's one-off set-up
        worker = ["polyfit", "worker", address, "--host", "127.0.0.1"]
        log = folder / f"{name}.log"
        stack.enter_context(_started(worker, clone, log, MLFLOW_TRACKING_URI=store))
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=120)
    return address


def _prepare() -> tuple[Path, Path]:
    """A reproduced, committed clone pushed to a bare origin, with a directory DVC remote."""
    project = fresh_clone("scale-out")
    run(["dvc", "repro"], project)
    run(["dvc", "remote", "add", "-d", "storage", str(scratch() / "dvc-remote")], project)
    run(["git", "commit", "-qam", "baseline reproduced, DVC remote"], project)
    run(["dvc", "push", "-q"], project)
    origin = scratch() / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], scratch())
    run(["git", "remote", "set-url", "origin", str(origin)], project)
    run(["git", "push", "-q", "origin", "HEAD:main"], project)
    return project, origin


def scale_out() -> Section:
    section = Section(f"Scale-out ({len(LEARNING_RATES)}-configuration `polyfit sweep`)")
    project, origin = _prepare()
    local, dask = [], []
    with contextlib.ExitStack() as stack:
        store = f"sqlite:///{project / 'mlflow.db'}"
        address = _dask_cluster(stack, scratch(), origin, store)
        for round_ in range(1, ROUNDS + 1):
            local.append(_timed_sweep(project, 2 * round_, f"local{round_}", "--jobs", "2"))
            run(["dvc", "queue", "stop"], project, check=False)  # idle queue workers compete
            dask.append(
                _timed_sweep(project, 2 * round_ + 1, f"dask{round_}", "--scheduler", address)
            )
    bare = median(_bare_stages(project))
    count = len(LEARNING_RATES)
    overhead = {
        label: 2 * median(walls) / count - bare
        for label, walls in (("local", local), ("dask", dask))
    }
    ratio = median(dask) / median(local)
    section.rows += [
        Row("local queue, `--jobs 2`", spread(local, digits=1)),
        Row("Dask, 2 `polyfit worker`s", spread(dask, digits=1)),
        Row("Dask / local (medians)", f"{ratio:.2f}x", f"<= {TARGET}x", verdict(ratio <= TARGET)),
        Row("train + evaluate, bare processes", f"{bare:.1f} s (median of {BARE_REPEATS})"),
        Row("beyond train + evaluate, per configuration: local", f"{overhead['local']:.1f} s"),
        Row("beyond train + evaluate, per configuration: Dask", f"{overhead['dask']:.1f} s"),
    ]
    section.notes += [
        f"`polyfit sweep -S train.lr=...` over {count} learning rates (2000 steps each), timed "
        "from the command's start to its table, on a clone reproduced once so each experiment "
        f"reruns train and evaluate only; {ROUNDS} rounds, local and Dask alternating.",
        "Dask: `dask scheduler` and two `polyfit worker`s on 127.0.0.1, each in its own clone "
        "(set up with `dvc pull` beforehand), a bare git origin and a directory DVC remote on "
        "this disk; each configuration is fetched, run with `dvc exp run --temp` and pushed "
        "with `dvc exp push`. Both paths track to the project's SQLite store. The cluster is "
        "started before the first round: a worker is a long-lived process.",
        "Beyond train + evaluate = 2 workers x wall time / configurations - the bare "
        "`python -m polyfit train` + `evaluate` time: what DVC, the queue or Dask, git and the "
        "push add to each configuration.",
    ]
    return section
