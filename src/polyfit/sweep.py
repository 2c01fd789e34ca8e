"""`polyfit sweep`: one DVC experiment per configuration of a grid, on the local DVC queue or on
a Dask cluster (dask_sweep.py), then one table of the results, best first.

The grid uses the syntax of `dvc exp run -S` (DVC's own hydra parser): `train.lr=1e-3,1e-2`,
`choice(...)`, `range(...)`. `--also` starts another grid, so configurations that are not a
product (each optimizer with its own learning rate) fit in one command.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass

from polyfit.errors import UsageError
from polyfit.paths import EVAL_METRICS, TRAIN_METRICS

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}")  # a valid git ref component


@dataclass
class Result:
    """What became of one configuration."""

    name: str
    overrides: list[str]
    ok: bool
    reason: str = ""
    worker: str = ""
    final_loss: float | None = None
    mse: float | None = None
    gap: float | None = None


def expand(groups: list[list[str]]) -> list[list[str]]:
    """Every configuration (a list of `key=value` overrides) of every grid, in order, no repeats."""
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps
    from hydra.errors import HydraException

    configurations = []
    for group in groups:
        try:
            sweeps = get_hydra_sweeps(to_path_overrides(group))
        except (HydraException, ValueError) as error:
            first = str(error).strip().splitlines()[0]
            raise UsageError(f"bad -S in {' '.join(group)}: {first}") from None
        for sweep in sweeps:
            overrides = [o for path, found in sweep.items() for o in _with_path(path, found)]
            if overrides not in configurations:
                configurations.append(overrides)
    return configurations


def _with_path(path: str, overrides: list[str]) -> list[str]:
    return overrides if path == "params.yaml" else [f"{path}:{o}" for o in overrides]


def experiment_name(prefix: str, overrides: list[str]) -> str:
    """PREFIX-<7 hex of the overrides>: the same configuration always gets the same name."""
    digest = hashlib.sha256(" ".join(sorted(overrides)).encode()).hexdigest()
    return f"{prefix}-{digest[:7]}"


def git(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def experiment_ref(baseline: str, name: str) -> str:
    """DVC's git ref for experiment `name` on commit `baseline`."""
    return f"refs/exps/{baseline[:2]}/{baseline[2:]}/{name}"


def read_result(baseline: str, name: str, overrides: list[str], cwd: str | None = None) -> Result:
    """The metrics an experiment committed, read from its git ref."""
    metrics = {}
    for path in (TRAIN_METRICS, EVAL_METRICS):
        shown = git("show", f"{experiment_ref(baseline, name)}:{path}", cwd=cwd)
        if shown.returncode != 0:
            return Result(name, overrides, False, f"no {path} in the experiment")
        metrics.update(json.loads(shown.stdout))
    try:
        numbers = [float(metrics[key]) for key in ("final_loss", "train_set.mse", "gap_to_optimum")]
    except (KeyError, TypeError, ValueError) as error:
        return Result(name, overrides, False, f"metrics of the experiment lack {error}")
    return Result(name, overrides, True, "", "", *numbers)


def error_line(output: str) -> str:
    """The one line that says why a stage or DVC failed."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for marker in (": error: ", "ERROR: "):
        found = [line for line in lines if marker in line]
        if found:
            return found[0][:300]
    return lines[-1][:300] if lines else "no output"


def table(results: list[Result]) -> str:
    """Markdown table, best (lowest eval mse) first, failed configurations last."""
    ranked = sorted(results, key=lambda r: (not r.ok, r.mse if r.mse is not None else 0.0))
    rows = ["| experiment | changed params | final_loss | eval mse | gap_to_optimum | worker |"]
    rows.append("|---|---|---|---|---|---|")
    for r in ranked:
        numbers = [_number(v) for v in (r.final_loss, r.mse, r.gap)] if r.ok else ["failed"] * 3
        rows.append(f"| {r.name} | {' '.join(r.overrides)} | {' | '.join(numbers)} | {r.worker} |")
    return "\n".join(rows)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def progress(done: int, running: int, failed: int, total: int, note: str = "") -> None:
    """One progress line on stderr: the table goes to stdout."""
    line = f"sweep: {done}/{total} done, {running} running, {failed} failed"
    print(line + (f"  {note}" if note else ""), file=sys.stderr, flush=True)


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
        from polyfit import dask_sweep

        commit = dask_sweep.check_workspace()  # refuse before anything is printed or sent
        print(f"sweep: {len(named)} configuration(s)", file=sys.stderr, flush=True)
        results = dask_sweep.run(named, scheduler, commit)
    else:
        from polyfit import local_sweep

        print(f"sweep: {len(named)} configuration(s)", file=sys.stderr, flush=True)
        results = local_sweep.run(named, args.jobs)
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
