"""background.child: a forked compute child whose yields and errors reach the parent in order."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from polyfit import background
from polyfit.errors import PolyfitError, UsageError


def counting(start: int):
    yield os.getpid()
    yield from range(start, start + 3)


def failing(error: Exception):
    yield "ready"
    raise error


def sleeping():
    yield os.getpid()
    time.sleep(600)
    yield "never"


def test_values_arrive_in_order_from_another_process():
    with background.child(counting, 10) as child:
        assert child.next() not in (os.getpid(), None)
        assert [child.next() for _ in range(3)] == [10, 11, 12]


def test_an_error_in_the_child_is_raised_in_the_parent_with_its_type():
    with background.child(failing, UsageError("data/dataset.pt: truncated")) as child:
        assert child.next() == "ready"
        with pytest.raises(UsageError, match=r"^data/dataset\.pt: truncated$") as raised:
            child.next()
    assert raised.value.exit_code == 2


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("no")


def test_an_unpicklable_error_still_arrives_by_name():
    with background.child(failing, Unpicklable("boom")) as child:
        child.next()
        with pytest.raises(PolyfitError, match=r"^Unpicklable: boom$"):
            child.next()


def test_a_child_that_dies_is_reported_with_its_signal():
    with background.child(sleeping) as child:
        os.kill(child.next(), signal.SIGKILL)
        with pytest.raises(PolyfitError, match=r"compute process died \(killed by SIGKILL\)"):
            child.next()


def test_leaving_on_an_error_kills_a_running_child():
    with pytest.raises(KeyError), background.child(sleeping) as child:
        pid = child.next()
        raise KeyError("the parent failed")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone and reaped, not a zombie


def run_script(code: str, **kwargs) -> subprocess.Popen:
    script = textwrap.dedent(code)
    return subprocess.Popen([sys.executable, "-c", script], text=True, **kwargs)


def test_buffered_output_is_written_once_and_in_order():
    done = run_script(
        """
        from polyfit import background
        def child_prints():
            print("child")
            yield None
        print("before the fork")  # buffered: stdout is a pipe
        with background.child(child_prints) as child:
            child.next()
        print("after")
        """,
        stdout=subprocess.PIPE,
    )
    assert done.communicate(timeout=60)[0] == "before the fork\nchild\nafter\n"


def test_the_child_exits_when_its_parent_is_killed(tmp_path):
    pid_file = tmp_path / "child.pid"
    parent = run_script(
        f"""
        import os, time
        from polyfit import background
        def forever():
            open({str(pid_file)!r}, "w").write(str(os.getpid()))
            time.sleep(600)
            yield None
        with background.child(forever) as child:
            child.next()
        """
    )
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphan = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)  # no cleanup runs in the parent
    parent.wait()
    deadline = time.monotonic() + 10 * background.PARENT_POLL_SECONDS
    while time.monotonic() < deadline:
        try:
            os.kill(orphan, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"child {orphan} still running after its parent was killed")
