"""The whole test suite's wall and CPU time per number of pytest processes: why `make test`
runs two on a 2-core machine.

    python benchmarks/suite_time.py --workers 2 3

Runs `make test`'s pytest command once per count (about 10 minutes each on 2 cores) and prints
the wall time, the CPU time the machine spent meanwhile (from /proc/stat, so every process the
tests start counts, and so does anything else running) and how busy the cores were. Not part of
`make bench`: it would double that run's length.
"""

import argparse
import os
import subprocess
import sys
import time
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


def measure(workers: int) -> dict:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-n", str(workers), "--dist", "loadfile", "--no-loadscope-reorder"]
    busy, idle = cpu_seconds()
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - started
    busy_after, idle_after = cpu_seconds()
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
    return {
        "wall": wall,
        "busy": busy_after - busy,
        "idle": idle_after - idle,
        "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 3])
    args = parser.parse_args()
    print(f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load before: {load()}")
    facts = describe()
    print(f"- Machine: {facts['CPU vendor']} {facts['CPU model']}, {facts['cores']} cores")
    print(f"- polyfit commit: {facts['polyfit commit']}\n")
    print("| pytest processes | wall | CPU busy | cores busy | result |")
    print("|---|---|---|---|---|")
    for workers in args.workers:
        found = measure(workers)
        share = found["busy"] / (found["busy"] + found["idle"])
        print(
            f"| {workers} | {found['wall'] / 60:.1f} min | {found['busy'] / 60:.1f} CPU-min "
            f"| {share:.0%} | {found['summary']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
