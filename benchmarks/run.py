"""`make bench`: measure polyfit side by side with its floors and write BENCHMARKS.md.

    python benchmarks/run.py --output BENCHMARKS.md   # everything: 15-25 min on 2 cores
    python benchmarks/run.py --quick                  # fewer rounds, small sizes, no sweeps
    python benchmarks/run.py --only loop              # one section (--quick applies too)

The report is printed, and written to --output if given. Scratch clones and stores go to a
temporary folder, removed at the end. Run it with the venv's python (the Makefile does).
"""

import argparse
import datetime
import os
import platform
import shutil
import sys
import time
from importlib.metadata import version

from checkpoint_cost import checkpoints
from common import SCRATCH, Section, run
from large_data import SIZES, large_data
from logging_cost import logging_cost
from mini_batches import mini_batches
from pipeline import cold, warm
from sweeps import sweeps
from training_loop import training_loop
from ui import ui

from polyfit.cpu import this_cpu

# Section -> its measure, given whether the run is --quick; in report order.
PLAN = {
    "loop": lambda quick: training_loop(rounds=2 if quick else 8),
    "cold": lambda quick: cold(rounds=1 if quick else 4),
    "checkpoints": lambda quick: checkpoints(rounds=2 if quick else 6),
    "warm": lambda quick: warm(repeats=2 if quick else 5),
    "logging": lambda quick: logging_cost(rounds=1 if quick else 3),
    "large-data": lambda quick: large_data(1, SIZES[:2]) if quick else large_data(3, SIZES),
    "mini-batches": lambda quick: mini_batches(rounds=1 if quick else 3),
    "sweeps": lambda quick: sweeps(rounds=1, configurations=2) if quick else sweeps(3, 6),
    "ui": lambda quick: ui(rounds=1 if quick else 3),
}
SLOW = ("sweeps",)  # left out of --quick unless asked for with --only


def _machine() -> str:
    """One line: CPU, cores, RAM, OS, versions and the commit measured."""
    with open("/proc/meminfo") as meminfo:
        ram = int(meminfo.readline().split()[1]) / 2**20  # MemTotal, kB
    versions = ", ".join(f"{name} {version(name)}" for name in ("torch", "mlflow", "dvc"))
    commit = run(["git", "rev-parse", "--short", "HEAD"]).output.strip()
    if run(["git", "status", "--porcelain", "--untracked-files=no"]).output.strip():
        commit += " + uncommitted changes"
    return (
        f"{this_cpu()}, {os.cpu_count()} cores, {ram:.1f} GiB RAM; {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}, {versions}; "
        f"polyfit {commit}"
    )


def _table(section: Section) -> list[str]:
    lines = ["| measure | median | target | verdict |", "|---|---|---|---|"]
    for row in section.rows:
        cells = (row.measure, row.value, row.target, row.verdict)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


def render(header: list[str], sections: list[Section]) -> str:
    lines = ["# Benchmarks", "", *header]
    for section in sections:
        lines += ["", f"## {section.title}", "", *_table(section), ""]
        lines += [f"- {note}" for note in section.notes]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, small sizes")
    parser.add_argument("--only", choices=list(PLAN), help="run this section only")
    parser.add_argument("--output", metavar="FILE", help="write the report here too")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow in this process
    names = [args.only] if args.only else [n for n in PLAN if not (args.quick and n in SLOW)]
    started_at = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load, started, sections = os.getloadavg(), time.perf_counter(), []
    try:
        for name in names:
            print(f"bench: {name} ...", flush=True)
            sections.append(PLAN[name](args.quick))
            print(f"bench: {name} done at {(time.perf_counter() - started) / 60:.1f} min")
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
    command = " ".join(["python benchmarks/run.py", *sys.argv[1:]])
    header = [
        f"Written by `{command}` on {started_at} (took {(time.perf_counter() - started) / 60:.0f}"
        f" min; load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end).",
        f"Machine: {_machine()}.",
        "",
        "A target is a ratio of two figures measured side by side in this run: each round runs "
        "every variant once, in rotated order, and the ratio is the median of the per-round "
        "ratios. Seconds differ between machines (by up to 1.5x) and between runs (this VM has "
        "a slow mode, in which whole processes run ~1.6x slower), so targets are ratios, but for "
        "the UI's: seconds a person waits, on 2 cores. Values are medians with the count and "
        "range of the samples.",
    ]
    text = render(header, sections)
    if args.output:
        with open(args.output, "w") as output:
            output.write(text)
    print(text)


if __name__ == "__main__":
    main()
