"""A measured alternative, not the product: a second process for a stage's torch work, so that
`import torch` overlaps `import mlflow` (overlapped_stages.py; BENCHMARKS.md gives its gain).

Each import costs about a second of one core; side by side on two cores they take the time of
one. The stage submits plain functions to a one-worker `ProcessPoolExecutor`, forked before
torch or MLflow is imported, and imports MLflow while the worker imports torch. The worker stays
for the stage's next call, so torch is imported once. Errors come back with their own type. The
price is this module: a fork-only pool, a thread that ends the worker when the stage is killed,
and a wait for the dead worker's exit code.
"""

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from polyfit.errors import PolyfitError

PARENT_POLL_SECONDS = 0.5  # how soon an orphaned worker notices its stage died (kill -9)


@contextlib.contextmanager
def torch_process() -> Iterator[ProcessPoolExecutor]:
    """A forked one-worker pool; leaving the block early (an error, Ctrl-C) kills the worker."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the forked worker would write what is buffered a second time
    pool = ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("fork"),  # no re-import: the worker starts at once
        initializer=_worker_setup,
        initargs=(os.getpid(),),
    )
    worker_pid = pool.submit(os.getpid).result()  # starts the worker: a fork, a few ms
    (worker,) = [p for p in multiprocessing.active_children() if p.pid == worker_pid]
    try:
        yield pool
    except BrokenProcessPool:
        raise PolyfitError(f"the compute process died ({_describe(_exit_code(worker))})") from None
    except BaseException:
        worker.kill()  # its work is not wanted any more
        raise
    finally:
        pool.shutdown(cancel_futures=True)


def _worker_setup(stage_pid: int) -> None:
    """Ctrl-C reaches the whole process group: the stage handles it and ends this worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def exit_with_stage():  # SIGKILL runs no cleanup in the stage: do not compute for no one
        while os.getppid() == stage_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=exit_with_stage, daemon=True).start()


def _exit_code(worker) -> int | None:
    """The dead worker's exit code. The pool's own thread may reap it first, which leaves
    our join() without a code for a moment: ask again until that thread has recorded it."""
    worker.join()
    deadline = time.monotonic() + 5
    while worker.exitcode is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return worker.exitcode


def _describe(exit_code: int | None) -> str:
    if exit_code is None:
        return "exit status unknown"
    return (
        f"killed by {signal.Signals(-exit_code).name}"
        if exit_code < 0
        else f"exit code {exit_code}"
    )
