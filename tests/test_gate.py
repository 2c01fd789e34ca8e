"""`polyfit gate`: regressions fail with a readable report; usage errors exit 2."""

import json
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import default_params, make_project, polyfit, run, small_params, write_params

from polyfit.core.data import TARGET_FUNCTIONS, make_dataset
from polyfit.core.fit import build_optimizer, fit, make_loss
from polyfit.core.loss_metrics import train_metrics
from polyfit.core.model import Polynomial
from polyfit.core.runtime import configure_torch
from polyfit.core.scoring import score
from polyfit.params import flatten, validate_params
from polyfit.tools.gate import Rule, judge
from polyfit.tracking.provenance import cpu_description

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
    assert "all 5 gated metrics hold" in report


def test_the_report_names_the_cpu_the_gate_ran_on(project):
    """In CI the gate runs where the metrics were reproduced: the report says which CPU."""
    done = polyfit("gate", cwd=project)
    cpu = cpu_description()
    assert f"Gate run on **{cpu['model']} ({cpu['vendor']})**" in done.stdout
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "vendor_id" in cpuinfo.read_text():  # x86 Linux, as in CI
        vendor = re.search(r"^vendor_id\s*:\s*(\S+)", cpuinfo.read_text(), re.MULTILINE)
        assert cpu["vendor"] == vendor.group(1) and cpu["model"] in cpuinfo.read_text()


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


@pytest.mark.parametrize(
    ("value", "why"), [(None, "missing"), (math.nan, "NaN"), ("0.01", "not a number ('0.01')")]
)
def test_missing_nan_or_text_metric_fails(project, value, why):
    path = project / "metrics/eval.json"
    metrics = json.loads(path.read_text())
    if value is None:
        del metrics["gap_to_optimum"]
    else:
        metrics["gap_to_optimum"] = value
    path.write_text(json.dumps(metrics))  # json writes NaN, as a broken run might
    done = polyfit("gate", cwd=project)
    assert done.returncode == 1
    assert f"**FAIL**: {why} on the current side |" in done.stdout


def test_a_report_it_cannot_write_is_a_usage_error(project):
    """Exit 2, not 1: a CI job would read 1 as a regression."""
    done = polyfit("gate", "--report", "absent/report.md", cwd=project)
    assert done.returncode == 2
    assert (
        done.stderr == "polyfit gate: error: --report absent/report.md: No such file or directory\n"
    )


@pytest.mark.slow
def test_a_worse_model_fails_the_gate_and_shows_the_params_that_differ(project):
    """A real reproduction with far fewer steps: the model is worse, CI must say so."""
    write_params(project, small_params(steps=100))
    repro = run(["dvc", "repro"], project)
    assert repro.returncode == 0, repro.stdout + repro.stderr
    done = polyfit("gate", "--baseline", "HEAD", cwd=project)
    assert done.returncode == 1
    assert "metrics/train.json: tail_mean_loss" in done.stdout.split("Result:")[1]
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
                "metrics/eval.json:\n  mse: {better: lower, abs: 0, rell: 0.1}\n"
            ),
            "gate.yaml: metrics/eval.json: mse.rell: unknown key; did you mean 'rel'?\n",
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


# --- gate.yaml's tolerances against real training: other rounding passes, regressions fail ---


def l1_loss(prediction, target):
    return torch.nn.functional.l1_loss(prediction, target, reduction="sum")


def shifted_target_loss(prediction, target):  # an off-by-one: each x paired with its neighbour's y
    return torch.nn.functional.mse_loss(prediction, target.roll(1), reduction="sum")


def trained_metrics(steps=2000, lr=1e-3, gradient="autograd", loss=None) -> dict:
    """{file: metrics} as the train and evaluate stages compute them, on the default params."""
    params = validate_params(default_params())
    data, train = params.data, params.train
    x, y = make_dataset(**data.model_dump())
    configure_torch(train.threads, train.seed)
    model = Polynomial(params.model.degree)
    optimizer = build_optimizer("RMSprop", model.parameters(), lr, train.optimizer_options())
    if loss is None:
        objective = make_loss(gradient, model, x, y)
    else:  # the seed's step with another loss function
        inputs = model.features(x)  # (N, degree), once, as make_loss does
        objective = lambda: loss(model.from_features(inputs), y)  # noqa: E731

    history = fit(objective, optimizer, steps, train.log_every, train.divergence_factor)
    grid_x = torch.linspace(data.x_min, data.x_max, params.evaluate.grid_points)
    grid_y = TARGET_FUNCTIONS[data.target](grid_x.double())
    scores = score(model, x, y, grid=(grid_x, grid_y))
    return {"train.json": train_metrics(history), "eval.json": flatten(scores)}


@pytest.fixture(scope="module")
def baseline_project(tmp_path_factory):
    """A scratch repo whose HEAD holds the metrics of the default training, made here."""
    project = make_project(tmp_path_factory.mktemp("gate") / "project", store=False)  # no MLflow
    for file, metrics in trained_metrics().items():
        (project / "metrics" / file).write_text(json.dumps(metrics))
    run(["git", "commit", "-qam", "baseline metrics"], project)
    return project


def gate_against_baseline(project, metrics: dict):
    for file, values in metrics.items():
        (project / "metrics" / file).write_text(json.dumps(values))
    return polyfit("gate", "--baseline", "HEAD", cwd=project)


def test_the_same_training_with_other_rounding_passes(baseline_project):
    """gram sums in float64: other rounding, so RMSprop circles out of phase, as on another CPU."""
    other = trained_metrics(gradient="gram")
    done = gate_against_baseline(baseline_project, other)
    assert done.returncode == 0, done.stdout
    baseline = json.loads(run(["git", "show", "HEAD:metrics/eval.json"], baseline_project).stdout)
    assert other["eval.json"]["train_set.mse"] != baseline["train_set.mse"]  # not a no-op


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({"steps": 1500}, ["metrics/eval.json: coef_max_abs_diff", "train.json: tail_mean_loss"]),
        ({"lr": 2e-3}, ["metrics/eval.json: train_set.mse", "train.json: tail_mean_loss"]),
        ({"lr": 5e-4}, ["metrics/eval.json: train_set.mse", "train.json: tail_mean_loss"]),
        ({"loss": l1_loss}, ["metrics/eval.json: gap_to_optimum", "train.json: tail_mean_loss"]),
        ({"loss": shifted_target_loss}, ["metrics/eval.json: coef_max_abs_diff"]),
    ],
    ids=["fewer-steps", "lr-too-high", "lr-too-low", "l1-loss", "target-off-by-one"],
)
def test_a_real_regression_fails_the_gate(baseline_project, change, failing):
    done = gate_against_baseline(baseline_project, trained_metrics(**change))
    assert done.returncode == 1, done.stdout
    verdict = done.stdout.split("regression(s): ")[1].splitlines()[0]
    for metric in failing:
        assert metric in verdict
