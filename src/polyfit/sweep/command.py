"""`polyfit sweep`: one DVC experiment per configuration of a grid, on the local DVC queue
(local.py) or on Dask workers (cluster.py), then one table of the results, best first."""

import os
import sys

from polyfit.errors import UsageError
from polyfit.sweep import local
from polyfit.sweep.grid import NAME_PATTERN, Result, check, expand, experiment_name


def main(args) -> None:
    if not NAME_PATTERN.fullmatch(args.name):
        raise UsageError(f"--name {args.name!r}: use letters, digits, '.', '_' and '-'")
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    groups = _split_groups(args.overrides or [])
    configurations = expand(groups)
    named = {experiment_name(args.name, c): c for c in configurations}
    scheduler = args.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if scheduler:
        # Dask is an optional extra: imported for a Dask sweep only (cli.py names the extra)
        from polyfit.sweep import cluster

        check(configurations)
        commit = cluster.check_workspace()  # refuse before anything is printed or sent
        print(f"sweep: {len(named)} configuration(s)", file=sys.stderr, flush=True)
        results = cluster.run(named, scheduler, commit)
    else:
        check(configurations)
        print(f"sweep: {len(named)} configuration(s)", file=sys.stderr, flush=True)
        results = local.run(named, args.jobs)
    print(table(results))
    failed = [r for r in results if not r.ok]
    for r in failed:
        line = f"polyfit sweep: error: {r.name} failed ({' '.join(r.overrides)}): {r.reason}"
        print(line, file=sys.stderr)
    if failed:
        sys.exit(1)


def _split_groups(overrides: list[str | None]) -> list[list[str]]:
    """-S values, split into grids at each --also (stored as None)."""
    groups: list[list[str]] = [[]]
    for override in overrides:
        if override is None:
            groups.append([])
        else:
            groups[-1].append(override)
    return [group for group in groups if group] or [[]]


def table(results: list[Result]) -> str:
    """Markdown table, best (lowest held-out mse) first, failed configurations last."""
    ranked = sorted(results, key=lambda r: (not r.ok, r.held_out_mse or 0.0))
    rows = ["| experiment | changed params | final_loss | train mse | held-out mse | worker |"]
    rows.append("|---|---|---|---|---|---|")
    for r in ranked:
        values = (r.final_loss, r.train_mse, r.held_out_mse)
        numbers = [_number(v) for v in values] if r.ok else ["failed"] * 3
        rows.append(f"| {r.name} | {' '.join(r.overrides)} | {' | '.join(numbers)} | {r.worker} |")
    return "\n".join(rows)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
