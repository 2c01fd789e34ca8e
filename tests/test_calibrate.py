"""`polyfit gate calibrate`: tolerances measured for the model and data at hand, from trainings
that differ only in what should not matter, kept by machine so that several machines add up."""

import json

import pytest
import yaml
from conftest import clean_env, make_project, polyfit, table_params

from polyfit.params import load_params
from polyfit.tools.calibrate import kernels, rewrite, spreads, tolerance, trained
from polyfit.tools.gate import Rule, load_rules

RULES = {
    "metrics/eval.json": {
        "held_out.mse": Rule(better="lower", abs=0.0, rel=0.5),
        "gap": Rule(better="lower", abs=0.5, rel=0.0),
        "never_measured": Rule(better="higher", abs=0.25, rel=0.0),
    }
}
HEADER = "# Rules for the gate.\n# allowed = abs + rel * |baseline|\n"


def run_of(machine: str, seed: int, mse: float, gap: float) -> dict:
    metrics = {"metrics/eval.json": {"held_out.mse": mse, "gap": gap}}
    return {"machine": machine, "seed": seed, "metrics": metrics}


def test_the_spread_is_taken_within_a_seed_across_machines():
    runs = [
        run_of("A", 0, 1.00, 0.10),
        run_of("A", 0, 1.02, 0.11),
        run_of("B", 0, 0.99, 0.13),  # another machine, the same seed: part of the spread
        run_of("A", 1, 5.00, 0.50),  # another seed is another training: not compared with seed 0
        run_of("A", 1, 5.01, 0.50),
    ]
    measured = spreads(RULES, runs)
    assert measured["metrics/eval.json", "held_out.mse"] == pytest.approx((0.03, 0.99))
    assert measured["metrics/eval.json", "gap"] == pytest.approx((0.03, 0.10))
    assert ("metrics/eval.json", "never_measured") not in measured


def test_the_tolerance_keeps_the_rules_kind_rounded_up_to_two_digits():
    relative = tolerance(Rule(better="lower", abs=0.0, rel=0.5), 0.03, 0.99, margin=2.0)
    assert (relative.abs, relative.rel) == (0.0, pytest.approx(0.061))  # 0.0606 -> 0.061
    absolute = tolerance(Rule(better="lower", abs=0.5, rel=0.0), 0.03, 0.10, margin=2.0)
    assert (absolute.abs, absolute.rel) == (pytest.approx(0.06), 0.0)


def test_no_spread_still_allows_one_float32_rounding():
    rule = tolerance(Rule(better="lower", abs=0.0, rel=0.5), 0.0, 4.0, margin=2.0)
    assert 0 < rule.rel < 1e-6


def test_gate_yaml_is_rewritten_with_its_comments_and_unmeasured_rules(tmp_path):
    runs = [run_of("A", 0, 1.00, 0.10), run_of("A", 0, 1.02, 0.11)]
    text = rewrite(HEADER, RULES, spreads(RULES, runs), 2.0, "--margin 2: 2 run(s)")
    assert text.startswith(HEADER)
    assert "# Calibrated by `polyfit gate calibrate --margin 2: 2 run(s)` (" in text
    (tmp_path / "gate.yaml").write_text(text)
    rules = load_rules(tmp_path / "gate.yaml")["metrics/eval.json"]
    assert rules["held_out.mse"] == Rule(better="lower", abs=0.0, rel=0.04)
    assert rules["gap"] == Rule(better="lower", abs=0.02, rel=0.0)
    assert rules["never_measured"] == RULES["metrics/eval.json"]["never_measured"]


@pytest.mark.slow
def test_calibrate_measures_this_machine_and_keeps_the_others(tmp_path, monkeypatch):
    project = make_project(tmp_path / "project", table_params(steps=10))
    env = clean_env(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
    assert polyfit("generate", cwd=project, env=env).returncode == 0
    monkeypatch.chdir(project)  # the CSV file, where params name it
    of = trained(load_params(project / "params.yaml"))
    elsewhere = run_of("another machine", 0, 123.0, 4.0) | {"trained": of}
    stale = run_of("another machine", 0, 999.0, 9.0) | {"trained": "other params"}
    (project / "gate-calibration.json").write_text(json.dumps({"runs": [elsewhere, stale]}))

    done = polyfit("gate", "calibrate", cwd=project, env=env)
    assert done.returncode == 0, done.stderr

    record = json.loads((project / "gate-calibration.json").read_text())["runs"]
    ours = [run for run in record if run["machine"] != "another machine"]
    assert len(ours) == 2 * len(kernels())  # train.threads 1 and 2, each of ATen's levels here
    assert elsewhere in record and stale not in record  # a run of other params or data goes
    assert "1 run(s) of other params or data dropped" in done.stdout
    assert {run["kernels"] for run in ours} == set(kernels())
    rules = yaml.safe_load((project / "gate.yaml").read_text())
    mse = rules["metrics/eval.json"]["held_out.mse"]
    # Another machine's run of the same seed, far off: its spread sets the tolerance.
    assert mse["rel"] > 1, mse
    assert done.stdout.endswith((project / "gate.yaml").read_text())
    assert "calibrate: run 1/" in done.stderr
    # The rewritten gate.yaml is one the gate reads: unchanged metrics pass it.
    gate = polyfit("gate", cwd=project, env=env)
    assert gate.returncode == 0, gate.stdout + gate.stderr


def test_calibrate_without_the_tables_says_run_dvc_repro(tmp_path):
    project = make_project(tmp_path / "project", table_params(), store=False)
    done = polyfit("gate", "calibrate", cwd=project)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "polyfit gate: error: data/train.pt does not exist: run `dvc repro` first"
    )
