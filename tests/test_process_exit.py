"""`python -m polyfit` ends its process without the interpreter's teardown (polyfit/__main__.py):
what Python's own exit guarantees must still hold."""

import subprocess
import sys

from conftest import clean_env

# A script that sets up the process as a test needs, then hands over to polyfit's entry point.
ENTRY = "import sys; sys.argv = ['polyfit', *sys.argv[1:]]; from polyfit.__main__ import run; run()"


def python_c(script: str, *args: str, cwd) -> subprocess.CompletedProcess:
    """`python -c script args` in the tests' clean environment, output captured."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def polyfit_after(setup: str, *args: str, cwd) -> subprocess.CompletedProcess:
    return python_c(f"{setup}\n{ENTRY}", *args, cwd=cwd)


def test_exit_handlers_run_and_piped_output_is_complete(tmp_path):
    setup = "import atexit; atexit.register(lambda: open('handler-ran', 'w').close())"
    done = polyfit_after(setup, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "handler-ran").exists()
    # The same text as with Python's own exit, which flushes the pipe's buffer itself.
    plain = python_c("from polyfit.cli import main; main()", "--help", cwd=tmp_path)
    assert plain.stdout.startswith("usage: polyfit")
    assert done.stdout == plain.stdout


def test_a_usage_error_keeps_its_exit_status_and_message(tmp_path):
    done = polyfit_after("", "no-such-command", cwd=tmp_path)
    assert done.returncode == 2
    assert "invalid choice: 'no-such-command'" in done.stderr


def test_a_polyfit_error_keeps_its_exit_status_and_message(tmp_path):
    (tmp_path / "params.yaml").write_text("data: [\n")  # unparsable
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    done = polyfit_after("", "generate", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("polyfit generate: error: ")
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_thread_still_running_is_waited_for(tmp_path):
    setup = (
        "import threading, time\n"
        "threading.Thread(target=lambda: (time.sleep(1), print('thread finished'))).start()"
    )
    done = polyfit_after(setup, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "thread finished" in done.stdout


def test_the_teardown_is_skipped(tmp_path):
    """What the entry point exists for: objects left at exit are not freed one by one."""
    setup = (
        "class Witness:\n"
        "    def __del__(self):\n"
        "        print('torn down', flush=True)\n"
        "witness = Witness()"
    )
    plain = python_c(setup, cwd=tmp_path)
    assert plain.stdout == "torn down\n"  # Python's own exit frees it: the witness works
    done = polyfit_after(setup, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "torn down" not in done.stdout
