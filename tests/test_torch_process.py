"""compute.torch_process: a forked worker whose results and errors reach the stage with their
types, that dies with the stage, and whose death is reported in one line."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from polyfit import compute
from polyfit.errors import PolyfitError, UsageError


def fail(error: Exception):
    raise error


def test_results_come_from_another_process_which_stays_for_the_next_call():
    with compute.torch_process() as worker:
        first, second = (worker.submit(os.getpid).result() for _ in range(2))
    assert first == second != os.getpid()


def test_an_error_in_the_worker_is_raised_in_the_stage_with_its_type():
    with compute.torch_process() as worker:
        failing = worker.submit(fail, UsageError("data/dataset.pt: truncated"))
        with pytest.raises(UsageError, match=r"^data/dataset\.pt: truncated$") as raised:
            failing.result()
    assert raised.value.exit_code == 2


def test_a_worker_that_dies_is_reported_with_its_signal():
    died = r"^the compute process died \(killed by SIGKILL\)$"
    with pytest.raises(PolyfitError, match=died), compute.torch_process() as worker:
        pid = worker.submit(os.getpid).result()
        sleeping = worker.submit(time.sleep, 600)
        os.kill(pid, signal.SIGKILL)
        sleeping.result()


def test_leaving_on_an_error_kills_a_busy_worker_at_once():
    with pytest.raises(KeyError), compute.torch_process() as worker:
        pid = worker.submit(os.getpid).result()
        worker.submit(time.sleep, 600)
        raise KeyError("the stage failed")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone and reaped, not a zombie


def run_script(code: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], text=True, **kwargs)


def test_buffered_output_is_written_once_and_in_order():
    done = run_script(
        """
        from polyfit import compute
        print("before the fork")  # buffered: stdout is a pipe
        with compute.torch_process() as worker:
            worker.submit(print, "worker", flush=True).result()
        print("after")
        """,
        stdout=subprocess.PIPE,
    )
    assert done.communicate(timeout=60)[0] == "before the fork\nworker\nafter\n"


def test_the_worker_exits_when_its_stage_is_killed(tmp_path):
    pid_file = tmp_path / "worker.pid"
    stage = run_script(
        f"""
        import os, time
        from polyfit import compute
        with compute.torch_process() as worker:
            open({str(pid_file)!r}, "w").write(str(worker.submit(os.getpid).result()))
            worker.submit(time.sleep, 600).result()
        """
    )
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    orphan = int(pid_file.read_text())
    stage.send_signal(signal.SIGKILL)  # no cleanup runs in the stage
    stage.wait()
    deadline = time.monotonic() + 20 * compute.PARENT_POLL_SECONDS
    while time.monotonic() < deadline:
        try:
            os.kill(orphan, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"worker {orphan} still running after its stage was killed")
