"""Section "The UI": `polyfit ui` from its start to the first answer, and from Ctrl-C to the end
of every process it started."""

import contextlib
import os
import signal
import socket
import subprocess
import time

import psutil
import requests
from common import PYTHON, Row, Section, child_env, median, reproduced_clone, spread, target_row

STARTS_WITHIN, STOPS_WITHIN = 10.0, 5.0  # seconds, on 2 cores


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_and_stop(project) -> tuple[float, float]:
    """(seconds to the first answer of GET /, seconds from SIGINT to no process left)."""
    port = _free_port()
    command = [PYTHON, "-m", "polyfit", "ui", "--port", str(port)]
    started = time.perf_counter()
    ui = subprocess.Popen(
        command,
        cwd=project,
        env=child_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Ctrl-C must reach it even when the benchmarks run in the background (`make bench &`),
        # whose children inherit SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    while True:
        if ui.poll() is not None:
            raise RuntimeError(f"polyfit ui exited {ui.returncode}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                break
        time.sleep(0.05)
    answered = time.perf_counter() - started
    processes = [psutil.Process(ui.pid), *psutil.Process(ui.pid).children(recursive=True)]
    stopping = time.perf_counter()
    os.killpg(ui.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
    _, alive = psutil.wait_procs(processes, timeout=60)
    if alive:
        raise RuntimeError(f"processes left a minute after Ctrl-C: {alive}")
    return answered, time.perf_counter() - stopping


def ui(rounds: int) -> Section:
    project = reproduced_clone()
    times = [_start_and_stop(project) for _ in range(rounds)]
    answers, stops = [a for a, _ in times], [s for _, s in times]
    section = Section("The UI (`polyfit ui` on the reproduced clone's store)")
    section.rows = [
        Row("start to the first answer", spread(answers)),
        target_row("start to the first answer, median", median(answers), STARTS_WITHIN, " s"),
        Row("Ctrl-C to the end of every process it started", spread(stops)),
        target_row("Ctrl-C to the end, median", median(stops), STOPS_WITHIN, " s"),
    ]
    section.notes = [
        f"{rounds} round(s): `python -m polyfit ui` in its own process group, GET / until it "
        "answers, then SIGINT to the group (what Ctrl-C sends) until no process it started is "
        "left. Without MLflow's job runner, as `polyfit ui` starts it.",
    ]
    return section
