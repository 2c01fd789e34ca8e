"""`polyfit runs cleanup`: end the MLflow runs whose process died before it could end them.

Every run is tagged with the host and pid that created it. A run still RUNNING whose process
is gone (SIGKILL, the OOM killer, a power cut) can never end itself, so cleanup marks it KILLED.
Runs of live processes, of other hosts, or without those tags are left alone: we cannot tell.
"""

import socket

import psutil

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
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        started = process.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # alive, but not ours to inspect
        return True
    return started <= run_started + 1  # create_time can round to whole seconds
