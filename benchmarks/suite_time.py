"""The whole test suite's wall and CPU time per number of pytest processes: why `make test`
runs two on a 2-core machine.

    python benchmarks/suite_time.py --workers 2 3
    python benchmarks/suite_time.py --workers 2 --by-process

Runs `make test`'s pytest command once per count (about 10 minutes each on 2 cores) and prints
the wall time, the CPU time the machine spent meanwhile (from /proc/stat, so every process the
tests start counts, and so does anything else running) and how busy the cores were. Not part of
`make bench`: it would double that run's length.

--by-process also says where that CPU went: every Python process the run starts (pytest, the
stages, dvc, mlflow, dask) records its own CPU time as it exits, through a sitecustomize module
put on PYTHONPATH for the run; the tables sum them by command, by test file and by test. What
it cannot see is the gap to the /proc/stat total: the interpreter's teardown after the exit
handlers (which `python -m polyfit` skips, but dvc and pytest pay), processes stopped by a
signal (servers, a killed worker), and programs not written in Python (git, Chromium,
PostgreSQL).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from machine import describe, load
from timing import REPO


def cpu_seconds() -> tuple[float, float]:
    """(busy, idle) seconds of all cores since boot; iowait counts as idle."""
    first_line = Path("/proc/stat").read_text().split("\n", 1)[0]
    fields = [int(value) for value in first_line.split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / ticks, idle / ticks


# Imported by every Python process of the run (PYTHONPATH): one JSON line per process at exit.
RECORDER = """
import atexit, json, os, sys

def _record():
    times = os.times()
    entry = {"argv": sys.argv[:2], "cpu": times.user + times.system,
             "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]}
    with open(os.environ["SUITE_TIME_LOG"], "a") as log:
        log.write(json.dumps(entry) + "\\n")

if "SUITE_TIME_LOG" in os.environ:
    atexit.register(_record)
"""


def measure(workers: int, log: Path | None = None) -> dict:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-n", str(workers), "--dist", "loadfile", "--no-loadscope-reorder"]
    env = dict(os.environ)
    if log is not None:
        hook = log.parent / "sitecustomize.py"
        hook.write_text(RECORDER)
        path = os.pathsep.join(filter(None, [str(hook.parent), env.get("PYTHONPATH")]))
        env.update(PYTHONPATH=path, SUITE_TIME_LOG=str(log))
    busy, idle = cpu_seconds()
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    busy_after, idle_after = cpu_seconds()
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    for line in done.stdout.splitlines():  # a timing is read knowing which tests failed
        if line.startswith(("FAILED ", "ERROR ")):
            print(line, file=sys.stderr)
    return {
        "wall": wall,
        "busy": busy_after - busy,
        "idle": idle_after - idle,
        "summary": summary,
    }


def command_of(argv: list[str]) -> str:
    """'polyfit train', 'dvc exp', 'mlflow server', or pytest itself (in-process tests)."""
    program = Path(argv[0]).name if argv else "python"
    if program == "__main__.py":  # python -m polyfit X
        program = Path(argv[0]).parent.name
    if program in ("-c", "pytest", "python"):  # xdist's workers are `python -c`
        return "pytest and its workers (in-process tests)"
    return f"{program} {argv[1]}" if len(argv) > 1 and not argv[1].startswith("-") else program


def by_process(log: Path, workers: int) -> None:
    """Markdown tables of the recorded CPU seconds, by command, by test file and by test."""
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    total = sum(entry["cpu"] for entry in entries)
    print(f"\nThe {workers}-process run recorded {len(entries)} Python processes, ", end="")
    print(f"{total / 60:.1f} CPU-min in all:\n")
    groupings = {
        "command": lambda entry: command_of(entry["argv"]),
        "test file": lambda entry: entry["test"].split("::")[0] or "(outside a test)",
        "test (a shared fixture counts for the first test that uses it)": lambda entry: (
            entry["test"] or "(outside a test)"
        ),
    }
    for title, group in groupings.items():
        cpu, count = Counter(), Counter()
        for entry in entries:
            name = group(entry)
            cpu[name] += entry["cpu"]
            count[name] += 1
        print(f"| {title} | processes | CPU | share |\n|---|---|---|---|")
        for name, seconds in cpu.most_common(15):
            print(f"| {name} | {count[name]} | {seconds:.0f} s | {seconds / total:.0%} |")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 3])
    parser.add_argument(
        "--by-process", action="store_true", help="also sum each Python process's CPU time"
    )
    args = parser.parse_args()
    print(f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load before: {load()}")
    facts = describe()
    print(f"- Machine: {facts['CPU vendor']} {facts['CPU model']}, {facts['cores']} cores")
    print(f"- polyfit commit: {facts['polyfit commit']}\n")
    header = "| pytest processes | wall | CPU busy | cores busy | result |\n|---|---|---|---|---|"
    for index, workers in enumerate(args.workers):
        if index == 0 or args.by_process:
            print(header)
        with tempfile.TemporaryDirectory() as scratch:
            log = Path(scratch) / "processes.jsonl" if args.by_process else None
            found = measure(workers, log)
            share = found["busy"] / (found["busy"] + found["idle"])
            print(
                f"| {workers} | {found['wall'] / 60:.1f} min | {found['busy'] / 60:.1f} CPU-min "
                f"| {share:.0%} | {found['summary']} |",
                flush=True,
            )
            if log is not None and log.exists():
                by_process(log, workers)


if __name__ == "__main__":
    main()
