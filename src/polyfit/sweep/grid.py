"""The grid of a sweep: expand -S overrides into configurations, name them, read their results.

The grid uses the syntax of `dvc exp run -S` (DVC's own hydra parser): `train.lr=1e-3,1e-2`,
`choice(...)`, `range(...)`. `--also` starts another grid, so configurations that are not a
product (each optimizer with its own learning rate) fit in one command.
"""

import difflib
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dvc.exceptions import InvalidArgumentError
from dvc.utils.cli_parse import to_path_overrides
from dvc.utils.hydra import apply_overrides, get_hydra_sweeps
from hydra.errors import HydraException

from polyfit.errors import UsageError
from polyfit.params import load_params, validate_params
from polyfit.paths import EVAL_METRICS, PARAMS, TRAIN_METRICS
from polyfit.yaml12 import parse_yaml

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
    train_mse: float | None = None
    held_out_mse: float | None = None


def expand(groups: list[list[str]]) -> list[list[str]]:
    """Every configuration (a list of `key=value` overrides) of every grid, in order, no repeats."""
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


def check(configurations: list[list[str]]) -> None:
    """Refuse, before anything is queued, a configuration its stages would refuse: apply its
    params.yaml overrides to a copy as `dvc exp run -S` does (DVC's own function), validate it."""
    load_params(PARAMS)  # the file itself first: DVC's parser would raise with a traceback
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / PARAMS.name
        for overrides in configurations:
            own = [o for o in overrides if ":" not in o.split("=", 1)[0]]  # not other files'
            shutil.copyfile(PARAMS, copy)
            try:
                apply_overrides(copy, own)
            except InvalidArgumentError as error:  # hydra's reason: "Could not override 'x.y'."
                reason = str(error.__cause__ or error).strip().splitlines()[0]
                hint = _did_you_mean(reason, parse_yaml(PARAMS.read_text(), str(PARAMS)))
                raise UsageError(f"-S {' '.join(overrides)}: {reason} No such key.{hint}") from None
            try:
                validate_params(parse_yaml(copy.read_text(), str(PARAMS)), str(PARAMS))
            except UsageError as error:
                raise UsageError(f"-S {' '.join(overrides)}: {error}") from None


def _did_you_mean(reason: str, params: dict) -> str:
    """A hint, " Did you mean 'train.lr'?", when the key hydra could not override is a near
    miss of one in params (`train.lrr`, `trian.lr`); "" otherwise."""
    named = re.search(r"override '([^']+)'", reason)
    if named is None:
        return ""
    path, block = named.group(1).split("."), params
    for depth, part in enumerate(path):
        if not isinstance(block, dict):
            return ""
        if part not in block:
            close = difflib.get_close_matches(part, [str(key) for key in block], n=1)
            meant = ".".join([*path[:depth], *close, *path[depth + 1 :]])
            return f" Did you mean '{meant}'?" if close else ""
        block = block[part]
    return ""


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
        numbers = [float(metrics[key]) for key in ("final_loss", "train_set.mse", "held_out.mse")]
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


def progress(done: int, running: int, failed: int, total: int, note: str = "") -> None:
    """One progress line on stderr: the table goes to stdout."""
    line = f"sweep: {done}/{total} done, {running} running, {failed} failed"
    print(line + (f"  {note}" if note else ""), file=sys.stderr, flush=True)
