"""The local path of `polyfit sweep`: DVC's own experiment queue with N workers on this machine.

Each configuration is queued as `dvc exp run --queue --name NAME -S ...` would queue it (in this
process, instead of a DVC start-up each), `dvc queue start -j N` runs them, and the
queue's status is polled until none of ours is queued or running.
"""

import os
import subprocess
import sys
import time

from dvc.exceptions import DvcException
from dvc.repo import Repo
from dvc.utils.cli_parse import to_path_overrides

from polyfit.errors import PolyfitError
from polyfit.paths import venv_first
from polyfit.sweep.grid import Result, error_line, experiment_ref, progress, read_result

POLL_SECONDS = 2
# DVC's queue workers can stop while tasks are still queued (treeverse/dvc#10562; seen here when
# a worker of an earlier sweep's name received a stale shutdown). After this many polls with ours
# waiting, none running and no worker answering, they are started again, as that issue advises.
STALLED_POLLS = 5
RESTARTS_WITHOUT_PROGRESS = 3  # then the sweep fails instead of waiting forever
WORKER = "local queue"


def run(named: dict[str, list[str]], jobs: int) -> list[Result]:
    """Queue every configuration, run the queue on `jobs` workers, return one Result each."""
    try:
        repo = Repo(".")
        baseline = repo.scm.get_rev()
        revs = _queue(repo, named)
    except DvcException as error:
        raise PolyfitError(f"could not queue the sweep: {error}") from None
    _start_workers(jobs)
    states = _wait(repo, revs, jobs)
    results = []
    for rev, name in revs.items():
        if states[rev] == "Success":
            result = read_result(baseline, name, named[name])
        else:
            result = Result(name, named[name], False, _failure_reason(rev))
        result.worker = WORKER
        results.append(result)
    return results


def _queue(repo, named: dict[str, list[str]]) -> dict[str, str]:
    """{stash rev: name}; an experiment of the same name on this commit is replaced."""
    existing = [name for name in named if _exists(repo, name)]
    if existing:
        repo.experiments.remove(exp_names=existing)
    revs = {}
    for name, overrides in named.items():
        entry = repo.experiments.queue_one(
            repo.experiments.celery_queue, params=to_path_overrides(overrides), name=name
        )
        revs[entry.stash_rev] = name
    return revs


def _exists(repo, name: str) -> bool:
    return repo.scm.get_ref(experiment_ref(repo.scm.get_rev(), name)) is not None


def _start_workers(jobs: int) -> None:
    """`dvc queue start`: starts the workers of the `jobs` that are not running."""
    # Workers outlive `dvc queue start` and inherit its stdout: a pipe would never close.
    started = subprocess.run(
        ["dvc", "queue", "start", "--jobs", str(jobs)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        env=venv_first(os.environ),  # the workers run the stages with this venv's python
    )
    if started.returncode != 0:
        raise PolyfitError("dvc queue start failed (run it by hand to see why)")


def _wait(repo, revs: dict[str, str], jobs: int) -> dict[str, str]:
    """Poll until each of our entries is Success or Failed; print progress when it changes.
    Start the queue's workers again when ours wait and none runs (see STALLED_POLLS)."""
    queue, last = repo.experiments.celery_queue, None
    stalled_polls, fruitless_restarts, ended_at_restart = 0, 0, None
    while True:
        states = {row["rev"]: row["status"] for row in queue.status() if row["rev"] in revs}
        states = {rev: states.get(rev, "Queued") for rev in revs}
        done, running, failed = [sum(s == wanted for s in states.values()) for wanted in _COUNTED]
        if (done, running, failed) != last:
            progress(done + failed, running, failed, len(revs))
            last = done, running, failed
        ended = done + failed
        if ended == len(revs):
            return states
        stalled_polls = 0 if running else stalled_polls + 1
        if stalled_polls == STALLED_POLLS and not queue.worker_status():  # no worker answers
            fruitless_restarts = fruitless_restarts + 1 if ended == ended_at_restart else 0
            if fruitless_restarts == RESTARTS_WITHOUT_PROGRESS:
                raise PolyfitError(
                    f"DVC's queue workers stop with {len(revs) - ended} configuration(s) still "
                    "queued (see `dvc queue status` and .dvc/tmp/exps/celery/*.out)"
                )
            print("sweep: the queue's workers stopped; starting them again", file=sys.stderr)
            _start_workers(jobs)
            ended_at_restart = ended
        stalled_polls %= STALLED_POLLS
        time.sleep(POLL_SECONDS)


_COUNTED = ("Success", "Running", "Failed")


def _failure_reason(rev: str) -> str:
    """The error line of the experiment's log (`dvc queue logs`)."""
    logs = subprocess.run(
        ["dvc", "queue", "logs", rev], capture_output=True, text=True, env=venv_first(os.environ)
    )
    return error_line(logs.stdout + logs.stderr)
