"""The Dask path of `polyfit sweep`: each configuration a task for a `polyfit worker`.

Workers run the commit checked out here, fetched from `origin`, so the workspace must be
committed and pushed: a sweep of unpushed code would run something else, or nothing.
"""

from distributed import Client, wait

from polyfit.errors import PolyfitError, UsageError
from polyfit.sweep.grid import Result, git, progress
from polyfit.sweep.task import run_configuration

CONNECT_TIMEOUT = 5  # seconds; with the imports an unreachable scheduler fails in < 10 s
HEARTBEAT = 30  # seconds between progress lines while nothing finishes
RESOURCE = {"polyfit": 1}  # only `polyfit worker`s offer it, one task at a time each


def check_workspace() -> str:
    """HEAD's sha, once it is known to be on origin with no uncommitted change to tracked files."""
    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        raise UsageError("not in a git repository with a commit")
    commit = head.stdout.strip()
    changed = git("status", "--porcelain", "--untracked-files=no")
    if changed.stdout.strip():
        raise UsageError("uncommitted changes to tracked files: commit and push them first")
    fetched = git("fetch", "--quiet", "origin")
    if fetched.returncode != 0:
        raise UsageError(f"cannot fetch from git remote origin: {fetched.stderr.strip()[:200]}")
    if not git("branch", "--remotes", "--contains", commit).stdout.strip():
        raise UsageError(f"HEAD {commit[:12]} is not on origin: push it first")
    return commit


def connect(address: str):
    """A distributed.Client on `address`, or one line saying why not."""
    try:
        return Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as error:
        message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        reason = message or type(error).__name__
        raise PolyfitError(f"cannot reach the Dask scheduler at {address}: {reason}") from None


def run(named: dict[str, list[str]], address: str, commit: str) -> list[Result]:
    """Submit one task per configuration of `commit` and collect every result, failed ones too."""
    client = connect(address)
    futures = {
        client.submit(
            run_configuration,
            commit,
            name,
            overrides,
            key=f"{name}@{commit[:12]}",
            pure=False,
            resources=RESOURCE,
        ): name
        for name, overrides in named.items()
    }
    results: list[Result] = []
    remaining = set(futures)
    try:
        while remaining:
            try:
                done, _ = wait(remaining, timeout=HEARTBEAT, return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished for a while: say what is going on
                _report(client, results, len(named))
                continue
            for future in done:
                results.append(_result(future, futures[future], named))
                _report(client, results, len(named), results[-1])
            remaining -= done
    except KeyboardInterrupt:
        client.cancel(list(futures))
        raise
    finally:
        client.close()
    return results


def _result(future, name: str, named: dict[str, list[str]]) -> Result:
    """The task's Result, or a failed one when the task itself raised (e.g. KilledWorker)."""
    try:
        return future.result()
    except Exception as error:
        text = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {text[0][:200] if text else ''}"
        return Result(name, named[name], False, reason)


def _report(client, results: list[Result], total: int, latest: Result | None = None) -> None:
    failed = sum(not r.ok for r in results)
    try:
        # Tasks assigned to a worker; each worker runs one at a time, the rest wait there.
        running = sum(bool(keys) for keys in client.processing().values())
        workers = len(client.scheduler_info(n_workers=-1)["workers"])
    except Exception:  # a progress line is not worth failing the sweep for
        running, workers = 0, 0
    note = f"{workers} worker(s)"
    if latest is not None:
        outcome = "ok" if latest.ok else "FAILED"
        note = f"{latest.name} {outcome} on {latest.worker or '?'}; {note}"
    progress(len(results), running, failed, total, note)
