"""`make bench`: measure the pipeline against its floors and write the report.

Run from the repo root with the venv first on PATH (the Makefile does both):
    python benchmarks/run.py --output BENCHMARKS.md   # everything, about 15 min on 2 cores
    python benchmarks/run.py --quick    # 1 repeat, sizes up to 1e6, no sweeps or MKL-mode cost
    python benchmarks/run.py --only loop
The report is printed, and written only to the file --output (or --report) names. Scratch
clones and stores go to a temporary folder, removed at the end.
"""

import argparse
import datetime
import os
import shutil
import sys
import time
from pathlib import Path

import machine
from cold_costs import cold_costs
from logging_cost import logging_cost
from overlap import overlap
from pipeline import cold, warm
from report import render
from reproducible_mode import reproducible_mode
from scale import SIZES, scale
from scale_out import scale_out
from sweep import sweep
from timing import SCRATCH
from training_loop import training_loop

from polyfit.core.runtime import REPRODUCIBLE_MKL

SECTIONS = ("cold", "cold-costs", "overlap", "warm", "logging", "loop", "scale", "cnr", "sweep")
SECTIONS += ("scale-out",)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Benchmark polyfit and write BENCHMARKS.md.")
    parser.add_argument(
        "--quick", action="store_true", help="1 repeat, scale up to 1e6, skip the sweeps"
    )
    parser.add_argument("--only", choices=SECTIONS, help="run this section only")
    parser.add_argument(
        "--repeats",
        type=int,
        default=4,
        help="runs per measure (default 4; cold, overlap and scale: 3)",
    )
    parser.add_argument(
        "--output",
        "--report",
        type=Path,
        metavar="FILE",
        help="write the report here (make bench: BENCHMARKS.md); without it, only print it",
    )
    return parser


def _counts(args) -> tuple[int, int]:
    """(repeats, repeats of cold, overlap and scale, whose rounds take half a minute or more)."""
    return (1, 1) if args.quick else (args.repeats, min(args.repeats, 3))


def _plan(args) -> dict:
    """Section name -> zero-argument callable, in run order."""
    repeats, heavy = _counts(args)
    sizes = SIZES[:-1] if args.quick else SIZES
    plan = {
        "cold": lambda: cold(heavy),
        "cold-costs": lambda: cold_costs(repeats),
        "overlap": lambda: overlap(heavy),
        "warm": lambda: warm(repeats),
        "logging": lambda: logging_cost(repeats),
        "loop": lambda: training_loop(repeats),
        "scale": lambda: scale(heavy, sizes),
        "cnr": lambda: reproducible_mode(heavy),
        "sweep": sweep,
        "scale-out": scale_out,
    }
    if args.only:
        return {args.only: plan[args.only]}
    if args.quick:
        del plan["sweep"], plan["cnr"], plan["scale-out"]
    return plan


def main() -> None:
    args = _parser().parse_args()
    for name, value in REPRODUCIBLE_MKL.items():  # what `polyfit` sets, for in-process sections
        os.environ.setdefault(name, value)
    started_at = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load_before, started = machine.load(), time.perf_counter()
    sections = []
    try:
        for name, measure in _plan(args).items():
            print(f"bench: {name} ...", flush=True)
            load_at_start = machine.load()
            sections.append(measure())
            sections[-1].notes.append(
                f"Load average (1/5/15 min) at the start: {load_at_start}, "
                f"at the end: {machine.load()}."
            )
            print(f"bench: {name} done at {(time.perf_counter() - started) / 60:.1f} min")
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
    repeats, heavy = _counts(args)
    mode = "quick: " if args.quick else ""
    mode += f"{repeats} repeats, {heavy} for cold, overlap and scale"
    mode += f", only {args.only}" if args.only else ""
    facts = machine.describe()
    run_facts = {
        "Date": f"{started_at}, took {(time.perf_counter() - started) / 60:.1f} min",
        "Machine": f"{facts['CPU vendor']} {facts['CPU model']}, {facts['cores']} cores",
        "Command": f"`python benchmarks/run.py{''.join(' ' + a for a in sys.argv[1:])}` ({mode})",
        "Load average (1/5/15 min)": f"{load_before} before, {machine.load()} after",
    }
    text = render(run_facts, facts, sections)
    if args.output:
        args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
