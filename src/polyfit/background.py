"""Run a stage's torch half in a forked child while this process opens MLflow.

`import torch` (+ torch._dynamo in train) and `import mlflow` with its SQLite store cost about a
second each, one core each; side by side on two cores a stage takes ~30% less wall time. The
child runs a generator in step with the parent: it computes up to its first `yield` at once,
and past each later one only when the parent calls `next()` again (so train can wait for its
MLflow run before training). An exception it raises is raised by the parent's `next()`.
"""

import contextlib
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, Pipe

from polyfit.errors import PolyfitError

PARENT_POLL_SECONDS = 0.5  # how soon an orphaned child notices its parent died (kill -9)


class Child:
    """The parent's end: `next()` returns what the child yielded next."""

    def __init__(self, pid: int, connection: Connection):
        self.pid, self.connection, self.asked = pid, connection, False

    def next(self):
        try:
            if self.asked:  # the first value comes unasked
                self.connection.send("next")
            self.asked = True
            kind, value = self.connection.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):  # the child is gone
            _, status = os.waitpid(self.pid, 0)
            self.pid = None
            raise PolyfitError(f"the compute process died ({_describe(status)})") from None
        if kind == "error":
            raise value
        return value


@contextlib.contextmanager
def child(generator: Callable[..., Iterator], *args) -> Iterator[Child]:
    """Fork; the child runs generator(*args). Leaving on an error kills the child."""
    parent_end, child_end = Pipe()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or both processes would write what is buffered
    pid = os.fork()
    if pid == 0:
        parent_end.close()
        _child_main(child_end, generator, args)  # never returns
    child_end.close()
    handle = Child(pid, parent_end)
    try:
        yield handle
    except BaseException:
        if handle.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(handle.pid, signal.SIGKILL)  # its work is not wanted any more
        raise
    finally:
        parent_end.close()  # a child waiting for "next" exits
        if handle.pid is not None:
            os.waitpid(handle.pid, 0)


def _child_main(connection: Connection, generator: Callable[..., Iterator], args) -> None:
    """Send each value the parent asks for, or the exception; exit without the parent's cleanup."""
    code = 0
    try:
        # Ctrl-C reaches the whole process group: the parent handles it and ends this child.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _exit_with_parent(os.getppid())
        try:
            for value in generator(*args):
                connection.send(("result", value))
                connection.recv()  # "next"; EOFError when the parent is done
        except EOFError:
            pass
        except Exception as error:
            if not isinstance(error, PolyfitError):  # a bug: its traceback exists only here
                traceback.print_exc()
            connection.send(("error", _picklable(error)))
    except BaseException:
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _exit_with_parent(parent: int) -> None:
    """Exit when the parent is gone (SIGKILL runs no cleanup), rather than compute for no one."""

    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _picklable(error: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return PolyfitError(f"{type(error).__name__}: {error}")


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
