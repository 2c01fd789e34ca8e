"""`polyfit gate`: fail CI when a metric regresses against the metrics committed at a revision.

`dvc metrics diff` reports but always exits 0; this applies the rules in gate.yaml and exits
0 (every rule holds), 1 (a regression, or a gated metric missing on one side, not a number or
NaN) or 2 (usage error). A gated metric missing on both sides does not apply to this model or
data (the polynomial-only metrics, for a model of your own): reported as such, not judged.
"""

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from polyfit import paths
from polyfit.cpu import this_cpu
from polyfit.errors import UsageError
from polyfit.params import flatten
from polyfit.yaml12 import describe, parse_yaml


class Rule(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)
    better: Literal["lower", "higher"]
    abs: Annotated[float, Field(ge=0)]
    rel: Annotated[float, Field(ge=0)]

    def __str__(self) -> str:
        return f"{self.better} is better, tolerance {self.abs:g} + {self.rel * 100:g}% of baseline"


class Verdict(BaseModel):
    metric: str
    baseline: float | None
    current: float | None
    rule: Rule
    passed: bool
    note: str
    applicable: bool = True


def judge(metric: str, baseline, current, rule: Rule) -> Verdict:
    """Does `current` stay within the rule's tolerance of `baseline`? Missing on one side or
    NaN fails; missing on both sides is not applicable."""
    sides = {"baseline": _as_number(baseline), "current": _as_number(current)}
    if baseline is None and current is None:  # a polynomial's metric, for a model of your own
        note = "not applicable: missing on both sides"
        return Verdict(metric=metric, rule=rule, passed=True, note=note, applicable=False, **sides)
    raw = {"baseline": baseline, "current": current}
    problem = next(
        (
            f"{why} on the {side} side"
            for side, value in raw.items()
            for why in [_unusable(value)]
            if why
        ),
        None,
    )
    if problem:
        return Verdict(metric=metric, rule=rule, passed=False, note=problem, **sides)
    worse_by = current - baseline if rule.better == "lower" else baseline - current
    allowed = rule.abs + rule.rel * abs(baseline)
    passed = worse_by <= allowed
    note = "" if passed else f"worse by {worse_by:.4g}, allowed {allowed:.4g}"
    return Verdict(metric=metric, rule=rule, passed=passed, note=note, **sides)


def _as_number(value) -> float | None:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if is_number else None


def _unusable(raw) -> str | None:
    """Why a metric's value (as read from JSON) cannot be judged, or None."""
    if raw is None:
        return "missing"
    number = _as_number(raw)
    if number is None:
        return f"not a number ({raw!r})"
    return "NaN" if math.isnan(number) else None


def _number(value) -> str:
    return "—" if value is None else f"{value:.6g}"


def _change(verdict: Verdict) -> str:
    if verdict.baseline is None or verdict.current is None:
        return "—"
    delta = verdict.current - verdict.baseline
    relative = f" ({delta / abs(verdict.baseline):+.2%})" if verdict.baseline else ""
    return f"{delta:+.4g}{relative}"


def render(verdicts: list[Verdict], params_changed: list[tuple], baseline: str, cpu: str) -> str:
    """The markdown report: the machine, metric table, result line, then the params that differ."""
    lines = [
        f"## polyfit gate: workspace vs {baseline}",
        "",
        f"Gate run on **{cpu}**; in CI, the CPU that reproduced the current metrics. Metrics "
        "differ slightly between CPU vendors, within these tolerances (docs/determinism.md).",
        "",
        "| metric | baseline | current | change | rule | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        verdict = "pass" if v.passed else f"**FAIL**: {v.note}"
        verdict = verdict if v.applicable else v.note
        lines.append(
            f"| {v.metric} | {_number(v.baseline)} | {_number(v.current)} "
            f"| {_change(v)} | {v.rule} | {verdict} |"
        )
    lines += ["", f"**Result: {summary(verdicts)}**", "", "### Params that differ", ""]
    if params_changed:
        lines += ["| param | baseline | current |", "|---|---|---|"]
        lines += [f"| {key} | {old} | {new} |" for key, old, new in params_changed]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def summary(verdicts: list[Verdict]) -> str:
    """'all 5 gated metrics hold.' or '1 regression(s): metrics/eval.json: held_out.mse'."""
    failed = [v.metric for v in verdicts if not v.passed]
    if failed:
        return f"{len(failed)} regression(s): {', '.join(failed)}"
    judged = [v for v in verdicts if v.applicable]
    skipped = len(verdicts) - len(judged)
    not_applicable = f" ({skipped} not applicable)" if skipped else ""
    return f"all {len(judged)} gated metrics hold{not_applicable}."


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True)


def resolve(revision: str) -> str:
    """The commit sha of `revision`, or a UsageError naming it."""
    done = _git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    if done.returncode != 0:
        raise UsageError(f"unknown git revision {revision!r}")
    return done.stdout.strip()


def read_at(commit: str, path: Path) -> str | None:
    """The file's text as committed at `commit`, or None if it is not there."""
    done = _git("show", f"{commit}:{path.as_posix()}")
    return done.stdout if done.returncode == 0 else None


def load_metrics(text: str | None, where: str) -> dict:
    if text is None:
        raise UsageError(f"{where}: metrics file not found")
    try:
        return flatten(json.loads(text))
    except (json.JSONDecodeError, AttributeError) as error:
        raise UsageError(f"{where}: not a JSON object of metrics ({error})") from None


def load_rules(path: Path) -> dict[str, dict[str, Rule]]:
    try:
        raw = parse_yaml(path.read_text(), str(path))
    except OSError as error:
        raise UsageError(f"{path}: cannot read: {error.strerror}") from None
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, dict) for v in raw.values()):
        raise UsageError(f"{path}: expected 'metrics file: {{metric: rule}}' mappings")
    return {
        file: {metric: _rule(path, file, metric, rule) for metric, rule in rules.items()}
        for file, rules in raw.items()
    }


def _rule(path: Path, file: str, metric: str, raw) -> Rule:
    try:
        return Rule.model_validate(raw)
    except ValidationError as error:
        raise UsageError(f"{path}: {file}: {metric}.{describe(error)}") from None


def params_diff(commit: str) -> list[tuple]:
    """(key, baseline, current) for every params.yaml key whose value differs."""
    old = flatten(parse_yaml(read_at(commit, paths.PARAMS) or "{}", "baseline params") or {})
    new = flatten(parse_yaml(paths.PARAMS.read_text(), str(paths.PARAMS)) or {})
    return [
        (k, old.get(k, "—"), new.get(k, "—"))
        for k in sorted(old.keys() | new.keys())
        if old.get(k, "—") != new.get(k, "—")
    ]


def compare(commit: str, label: str) -> list[Verdict]:
    """Every gated metric of the workspace judged against its value at `commit`."""
    verdicts = []
    for file, metric_rules in load_rules(paths.GATE_RULES).items():
        path = Path(file)
        baseline = load_metrics(read_at(commit, path), f"{file} at {label}")
        current = load_metrics(path.read_text() if path.exists() else None, f"{file} (workspace)")
        verdicts += [
            judge(f"{file}: {metric}", baseline.get(metric), current.get(metric), rule)
            for metric, rule in metric_rules.items()
        ]
    return verdicts


def main(args) -> None:
    commit = resolve(args.baseline)
    verdicts = compare(commit, args.baseline)
    against = f"`{args.baseline}` ({commit[:8]})"
    report = render(verdicts, params_diff(commit), against, this_cpu())
    print(report, end="")
    if args.report:
        try:
            Path(args.report).write_text(report)
        except OSError as error:  # exit 1 would read as a regression
            raise UsageError(f"--report {args.report}: {error.strerror}") from None
    if not all(v.passed for v in verdicts):
        sys.exit(1)
