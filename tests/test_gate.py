"""`polyfit gate`: regressions fail with a readable report; usage errors exit 2."""

import json
import math

import pytest
from conftest import polyfit, run, small_params, write_params

from polyfit.gate import Rule, judge

LOWER = Rule(better="lower", abs=0.0, rel=0.25)


@pytest.mark.parametrize(
    ("baseline", "current", "passed"),
    [
        (1.0, 1.0, True),
        (1.0, 0.5, True),  # better
        (1.0, 1.25, True),  # exactly at the tolerance
        (1.0, 1.3, False),
        (1.0, None, False),
        (None, 1.0, False),
        (1.0, math.nan, False),
        (math.nan, 1.0, False),
        (1.0, "1.0", False),  # not a number
    ],
)
def test_judge_lower_is_better(baseline, current, passed):
    assert judge("m", baseline, current, LOWER).passed is passed


def test_judge_higher_is_better_with_absolute_tolerance():
    rule = Rule(better="higher", abs=0.1, rel=0.0)
    assert judge("m", 1.0, 0.95, rule).passed
    verdict = judge("m", 1.0, 0.8, rule)
    assert not verdict.passed and verdict.note == "worse by 0.2, allowed 0.1"


def edit_metrics(project, file: str, **changes):
    path = project / "metrics" / file
    metrics = json.loads(path.read_text()) | changes
    path.write_text(json.dumps(metrics))


def test_unchanged_metrics_pass_and_report_is_written(project):
    done = polyfit("gate", "--report", "report.md", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    report = (project / "report.md").read_text()
    assert report == done.stdout
    assert "| metric | baseline | current | change | rule | verdict |" in report
    assert "all 4 gated metrics hold" in report


def test_change_within_tolerance_passes(project):
    mse = json.loads((project / "metrics/eval.json").read_text())["train_set.mse"]
    edit_metrics(project, "eval.json", **{"train_set.mse": mse * 1.005})
    assert polyfit("gate", cwd=project).returncode == 0


def test_regression_fails_and_names_the_metric(project):
    mse = json.loads((project / "metrics/eval.json").read_text())["train_set.mse"]
    edit_metrics(project, "eval.json", **{"train_set.mse": mse * 2})
    done = polyfit("gate", cwd=project)
    assert done.returncode == 1
    assert "1 regression(s): metrics/eval.json: train_set.mse" in done.stdout
    assert "**FAIL**" in done.stdout


@pytest.mark.parametrize("value", [None, "NaN"])
def test_missing_or_nan_metric_fails(project, value):
    path = project / "metrics/eval.json"
    metrics = json.loads(path.read_text())
    if value is None:
        del metrics["gap_to_optimum"]
    else:
        metrics["gap_to_optimum"] = math.nan
    path.write_text(json.dumps(metrics))  # json writes NaN, as a broken run might
    done = polyfit("gate", cwd=project)
    assert done.returncode == 1
    assert ("missing" if value is None else "NaN") + " on the current side" in done.stdout


@pytest.mark.slow
def test_a_worse_model_fails_the_gate_and_shows_the_params_that_differ(project):
    """A real reproduction with far fewer steps: the model is worse, CI must say so."""
    write_params(project, small_params(steps=100))
    repro = run(["dvc", "repro"], project)
    assert repro.returncode == 0, repro.stdout + repro.stderr
    done = polyfit("gate", "--baseline", "HEAD", cwd=project)
    assert done.returncode == 1
    assert "metrics/train.json: final_loss" in done.stdout.split("Result:")[1]
    assert "| train.steps | 2000 | 100 |" in done.stdout


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "unknown git revision 'no-such-rev'"),
        (lambda p: (p / "metrics/eval.json").unlink(), "metrics/eval.json (workspace): metrics"),
        (lambda p: (p / "gate.yaml").write_text("metrics/eval.json: [1, 2"), "malformed YAML"),
        (
            lambda p: (p / "gate.yaml").write_text("metrics/eval.json:\n  mse: {better: up}\n"),
            "gate.yaml: metrics/eval.json: mse.better: Input should be 'lower' or 'higher'",
        ),
        (
            lambda p: (p / "gate.yaml").write_text(
                "metrics/nope.json:\n  mse: {better: lower, abs: 0, rel: 0}\n"
            ),
            "metrics/nope.json at",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(project, setup, message):
    setup(project)
    revision = "no-such-rev" if "revision" in message else "HEAD"
    done = polyfit("gate", "--baseline", revision, cwd=project)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert message in done.stderr
