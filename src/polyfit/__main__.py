"""`python -m polyfit` and the `polyfit` command: the command-line interface as a process.

The process ends without tearing the interpreter down. After a stage, freeing torch's and
MLflow's objects one by one takes most of a second (BENCHMARKS.md, "Where a cold stage's time
goes") and gives back nothing the OS does not take back at exit. Exit handlers still run,
MLflow's and logging's among them. Code that calls polyfit.cli.main() in its own process (the
tests) keeps Python's normal exit.
"""

import atexit
import os
import sys
import threading
from typing import NoReturn

from polyfit.cli import main


def run() -> NoReturn:
    try:
        main()
        code = 0
    except SystemExit as done:
        if not isinstance(done.code, int | None):
            raise  # a message for Python to print
        code = done.code or 0
    end_process(code)


def end_process(code: int) -> NoReturn:
    """Exit with `code` as Python's own exit would, minus the teardown."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if any(thread.is_alive() and not thread.daemon for thread in others):
        sys.exit(code)  # Python waits for them first
    atexit._run_exitfuncs()  # what interpreter exit runs first (private, there since Python 2)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: Python's own exit reports it with status 120 too
        code = code or 120
    os._exit(code)


if __name__ == "__main__":
    run()
