"""`polyfit runs cleanup`: end the MLflow runs whose process died before it could end them.

Every run is tagged with the host and pid that created it. A run still RUNNING whose process
is gone (SIGKILL, the OOM killer, a power cut) can never end itself, so cleanup marks it KILLED.
Runs of live processes, of other hosts, or without those tags are left alone: we cannot tell.
"""

import os
import socket
from pathlib import Path

from polyfit import paths
from polyfit.params import load_params
from polyfit.tracking import runs, store

PAGE_SIZE = 1000


def main(args) -> None:
    params = load_params(paths.PARAMS)
    client, experiment_id = store.connect(params.mlflow.experiment)
    host = socket.gethostname()
    killed = left = 0
    for run in running_runs(client, experiment_id):
        reason = orphan_reason(run.data.tags, run.info.start_time, host)
        if reason is None:
            left += 1
            continue
        runs.end_run(client, run.info.run_id, "KILLED", reason)
        killed += 1
        print(f"marked KILLED: run {run.info.run_id} ({run.info.run_name}): {reason}")
    print(f"{killed} run(s) marked KILLED, {left} left RUNNING (live, other host or untagged)")


def running_runs(client, experiment_id: str) -> list:
    """Every RUNNING run of the experiment, all pages."""
    found, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            "attributes.status = 'RUNNING'",
            max_results=PAGE_SIZE,
            page_token=token,
        )
        found += page
        token = page.token
        if not token:
            return found


def orphan_reason(tags: dict, run_started_ms: int, host: str) -> str | None:
    """Why the run's process is known to be gone, or None when it may still be alive."""
    if tags.get("host") != host or not tags.get("pid", "").isdigit():
        return None
    pid = int(tags["pid"])
    if process_alive(pid, run_started_ms / 1000):
        return None
    return f"process {pid} on {host} ended without ending the run (polyfit runs cleanup)"


def process_alive(pid: int, run_started: float) -> bool:
    """Is `pid` still the process that started a run at `run_started` (epoch seconds)?

    A zombie has exited already, and a pid whose process started after the run was reused.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    state, started = _proc_state(pid)
    if state == "Z":
        return False
    return started is None or started <= run_started + 1  # /proc/stat's boot time is whole s


def _proc_state(pid: int) -> tuple[str | None, float | None]:
    """(state letter, start time in epoch seconds) from Linux /proc, or Nones elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = _boot_time()
    except OSError:
        return None, None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (command)", which may hold spaces
    ticks = int(fields[19])  # field 22 of proc(5): start time in clock ticks after boot
    return fields[0], boot + ticks / os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    """When this Linux host booted, in epoch seconds (whole seconds: /proc/stat's btime)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("/proc/stat has no btime")
