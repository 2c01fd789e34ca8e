"""`polyfit gate` with metrics a model does not have: a gated metric missing on both sides
(the polynomial-only metrics, for a model of your own) is reported as not applicable, not
failed; missing on one side still fails."""

import json
import subprocess

from conftest import polyfit

from polyfit.tools.gate import Rule, judge

LOWER = Rule(better="lower", abs=0.0, rel=0.25)
POLYNOMIAL_ONLY = ("gap_to_optimum", "coef_max_abs_diff")  # gated in gate.yaml


def test_missing_on_both_sides_is_not_applicable_and_passes():
    verdict = judge("m", None, None, LOWER)
    assert verdict.passed and not verdict.applicable
    assert verdict.note == "not applicable: missing on both sides"


def test_missing_on_one_side_still_fails():
    for baseline, current in [(1.0, None), (None, 1.0)]:
        verdict = judge("m", baseline, current, LOWER)
        assert not verdict.passed and verdict.applicable


def drop_metrics(project, names) -> None:
    path = project / "metrics/eval.json"
    metrics = {k: v for k, v in json.loads(path.read_text()).items() if k not in names}
    path.write_text(json.dumps(metrics))


def commit(project) -> None:
    for args in (["add", "-A"], ["commit", "-qm", "a model without coefficients"]):
        subprocess.run(["git", *args], cwd=project, check=True, capture_output=True)


def test_gate_reports_metrics_missing_on_both_sides_and_passes(project):
    drop_metrics(project, POLYNOMIAL_ONLY)
    commit(project)
    done = polyfit("gate", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in POLYNOMIAL_ONLY:
        row = next(
            line for line in done.stdout.splitlines() if f"| metrics/eval.json: {name} |" in line
        )
        assert row.endswith("| not applicable: missing on both sides |"), row
    assert "all 3 gated metrics hold (2 not applicable)." in done.stdout


def test_a_judged_metric_still_fails_beside_not_applicable_ones(project):
    drop_metrics(project, POLYNOMIAL_ONLY)
    commit(project)
    path = project / "metrics/eval.json"
    metrics = json.loads(path.read_text())
    path.write_text(json.dumps(metrics | {"train_set.mse": metrics["train_set.mse"] * 2}))
    done = polyfit("gate", cwd=project)
    assert done.returncode == 1
    assert "1 regression(s): metrics/eval.json: train_set.mse" in done.stdout


def test_missing_on_the_current_side_only_still_fails(project):
    drop_metrics(project, ("gap_to_optimum",))  # the baseline (HEAD) still has it
    done = polyfit("gate", cwd=project)
    assert done.returncode == 1
    assert "missing on the current side" in done.stdout
    assert "not applicable" not in done.stdout
