"""`polyfit gate` with metrics a model does not have: gate.yaml may gate metrics that only some
models produce (the polynomial's distance from its optimum, say, for a model of your own). One
missing on both sides is reported as not applicable, not failed; missing on one side still
fails. On synthetic metrics in a scratch git repo."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import polyfit

from polyfit.tools.gate import Rule, judge

LOWER = Rule(better="lower", abs=0.0, rel=0.25)
ONLY_SOME_MODELS = ("distance_to_optimum", "coef_error")  # gated, absent for this model
RULES = {
    "metrics/eval.json": {
        "held_out.mse": {"better": "lower", "abs": 0.0, "rel": 0.1},
        **{name: {"better": "lower", "abs": 0.01, "rel": 0.0} for name in ONLY_SOME_MODELS},
    }
}
METRICS = {"held_out.mse": 0.5, "train_set.mse": 0.4}


def test_missing_on_both_sides_is_not_applicable_and_passes():
    verdict = judge("m", None, None, LOWER)
    assert verdict.passed and not verdict.applicable
    assert verdict.note == "not applicable: missing on both sides"


def test_missing_on_one_side_still_fails():
    for baseline, current in [(1.0, None), (None, 1.0)]:
        verdict = judge("m", baseline, current, LOWER)
        assert not verdict.passed and verdict.applicable


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)


def write_metrics(folder: Path, metrics: dict) -> None:
    (folder / "metrics" / "eval.json").write_text(json.dumps(metrics))


@pytest.fixture
def repo(tmp_path) -> Path:
    """HEAD: gate.yaml gating metrics this model's baseline lacks, and that baseline."""
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "gate.yaml").write_text(yaml.safe_dump(RULES))
    (tmp_path / "params.yaml").write_text("model: {width: 8}\n")
    (tmp_path / "metrics").mkdir()
    write_metrics(tmp_path, METRICS)
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "a model without an optimum")
    return tmp_path


def test_gate_reports_metrics_missing_on_both_sides_and_passes(repo):
    done = polyfit("gate", cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ONLY_SOME_MODELS:
        row = next(
            line for line in done.stdout.splitlines() if f"| metrics/eval.json: {name} |" in line
        )
        assert row.endswith("| not applicable: missing on both sides |"), row
    assert "all 1 gated metrics hold (2 not applicable)." in done.stdout


def test_a_judged_metric_still_fails_beside_not_applicable_ones(repo):
    write_metrics(repo, METRICS | {"held_out.mse": METRICS["held_out.mse"] * 2})
    done = polyfit("gate", cwd=repo)
    assert done.returncode == 1
    assert "**Result: 1 regression(s): metrics/eval.json: held_out.mse**" in done.stdout
    assert done.stdout.count("| not applicable: missing on both sides |") == 2


@pytest.mark.parametrize("side", ["current", "baseline"])
def test_missing_on_one_side_only_still_fails(repo, side):
    """A model that starts or stops producing a gated metric is a change the gate reports."""
    with_it = METRICS | {"distance_to_optimum": 0.1}
    write_metrics(repo, with_it)
    if side == "current":  # the baseline has it, the workspace not
        git(repo, "commit", "-qam", "a model with an optimum")
        write_metrics(repo, METRICS)
    done = polyfit("gate", cwd=repo)
    assert done.returncode == 1
    assert f"| **FAIL**: missing on the {side} side |" in done.stdout
    assert "1 regression(s): metrics/eval.json: distance_to_optimum" in done.stdout
    assert done.stdout.count("| not applicable: missing on both sides |") == 1  # coef_error
