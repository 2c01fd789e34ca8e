"""Sweep: 6 queued experiments run by `dvc queue start -j 1` against `-j 2`."""

import time
from pathlib import Path

from timing import Row, Section, fresh_clone, run

LEARNING_RATES = ("0.0005", "0.001", "0.0015", "0.002", "0.003", "0.004")
TIMEOUT = 1800  # seconds; a stuck queue fails the benchmark instead of hanging it
# Refs under refs/exps that are DVC's bookkeeping, not finished experiments.
BOOKKEEPING = ("refs/exps/celery/", "refs/exps/exec/", "refs/exps/stash", "refs/exps/apply")


def _finished(clone: Path) -> tuple[int, int]:
    """(succeeded, failed) experiments, read from git refs: cheap enough to poll."""
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], clone).stdout.split()
    succeeded = sum(not ref.startswith(BOOKKEEPING) for ref in refs)
    failed_log = ["git", "reflog", "show", "--format=%H", "refs/exps/celery/failed"]
    failed = len(run(failed_log, clone, check=False).stdout.split())
    return succeeded, failed


def _run_queue(jobs: int) -> tuple[float, int, int]:
    """(wall seconds from `dvc queue start` until all are done, succeeded, failed)."""
    clone = fresh_clone(f"sweep-j{jobs}")
    run(["dvc", "repro"], clone)  # the baseline every experiment starts from
    for lr in LEARNING_RATES:
        run(["dvc", "exp", "run", "--queue", "-S", f"train.lr={lr}"], clone)
    started = time.perf_counter()
    run(["dvc", "queue", "start", "-j", str(jobs)], clone)
    while sum(done := _finished(clone)) < len(LEARNING_RATES):
        if time.perf_counter() - started > TIMEOUT:
            raise RuntimeError(f"sweep -j {jobs}: (ok, failed) = {done} after {TIMEOUT} s")
        time.sleep(0.5)
    seconds = time.perf_counter() - started
    run(["dvc", "queue", "stop"], clone, check=False)  # workers would idle out after 10 s anyway
    return seconds, *done


def sweep() -> Section:
    section = Section(f"Sweep ({len(LEARNING_RATES)} queued experiments)")
    results = {jobs: _run_queue(jobs) for jobs in (1, 2)}
    for jobs, (seconds, succeeded, failed) in results.items():
        outcome = f"{succeeded} succeeded" + (f", **{failed} failed**" if failed else "")
        section.rows.append(Row(f"`dvc queue start -j {jobs}`", f"{seconds:.1f} s ({outcome})"))
    speedup = results[1][0] / results[2][0]
    section.rows += [
        Row("-j 1 per experiment", f"{results[1][0] / len(LEARNING_RATES):.1f} s"),
        Row("speed-up of -j 2 over -j 1", f"{speedup:.2f}x"),
    ]
    section.notes += [
        "One run per setting (a sweep takes minutes). Each setting gets its own fresh clone, "
        "reproduced once so that every experiment reruns only train and evaluate, then "
        f"`dvc exp run --queue -S train.lr=...` for lr in {', '.join(LEARNING_RATES)} "
        "(2000 steps each, the default).",
        "Wall time from `dvc queue start` until every experiment has a result: a ref under "
        "refs/exps (succeeded) or an entry in refs/exps/celery/failed, polled every 0.5 s.",
        "All experiments log to the clone's SQLite store, so -j 2 has two writers on it.",
    ]
    return section
