"""End to end: `dvc repro` in a scratch copy of the repo, with its real MLflow store."""

import os

import numpy as np
import pytest
import torch
from conftest import (
    OUTPUTS,
    REPO,
    default_params,
    lock_inputs,
    mlflow_client,
    polyfit,
    run,
    runs_of,
    write_params,
)

from polyfit import paths
from polyfit.files import sha256

pytestmark = pytest.mark.slow


def repro(project, *args):
    done = run(["dvc", "repro", *args], project)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def snapshot(project) -> dict:
    return {str(path): (project / path).read_bytes() for path in [*OUTPUTS, "dvc.lock"]}


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """One full `dvc repro` on the default params, shared by the tests below, and the MLflow
    runs it recorded, listed before any test adds runs of its own (so any test order works)."""
    from conftest import make_project

    project = make_project(tmp_path_factory.mktemp("e2e") / "project", store=False)
    output = repro(project)
    return project, output, runs_of(f"sqlite:///{project / 'mlflow.db'}")


def test_repro_runs_three_stages_and_matches_the_committed_results(reproduced):
    project, output, _ = reproduced
    assert ran_stages(output) == ["generate", "train", "evaluate"]
    assert "Result: y = " in output
    # What each stage read from the repo (code, params) is recorded exactly as committed. What the
    # stages wrote, and so what a later stage read from an earlier one, is the same bytes only on
    # the CPU that made the lock (another vendor rounds the last float32 bits differently), so
    # those are held to the committed metrics by the gate's tolerances, as CI does.
    lock, committed = ((folder / "dvc.lock").read_text() for folder in (project, REPO))
    assert lock_inputs(lock) == lock_inputs(committed)
    gate = polyfit("gate", "--baseline", "HEAD", cwd=project)
    assert gate.returncode == 0, gate.stdout + gate.stderr


def test_every_stage_is_tracked_in_the_store_at_the_repo_root(reproduced):
    project, _, runs = reproduced
    uri = f"sqlite:///{project / 'mlflow.db'}"
    assert sorted(r.data.tags["stage"] for r in runs) == ["evaluate", "generate", "train"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    train = next(r for r in runs if r.data.tags["stage"] == "train")
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    assert train.data.tags["mlflow.source.git.commit"] == head
    assert train.data.tags["git_dirty"] == "false"
    history = mlflow_client(uri).get_metric_history(train.info.run_id, "loss")
    assert len(history) == 2000
    assert "eval.gap_to_optimum" in train.data.metrics
    assert (project / "mlartifacts").is_dir()


def test_second_repro_runs_nothing_and_forced_repro_is_byte_identical(reproduced):
    project, _, _ = reproduced
    before = snapshot(project)
    assert ran_stages(repro(project)) == []
    assert ran_stages(repro(project, "-f")) == ["generate", "train", "evaluate"]
    assert snapshot(project) == before


def test_a_train_param_change_reruns_train_and_evaluate_only(reproduced):
    project, _, _ = reproduced
    params = default_params()
    params["train"]["lr"] = 2e-3
    write_params(project, params)
    try:
        assert ran_stages(repro(project)) == ["train", "evaluate"]
    finally:
        write_params(project, default_params())
        repro(project)


def test_predict_evaluates_the_models_polynomial(reproduced):
    project, _, _ = reproduced
    state = torch.load(project / paths.MODEL, weights_only=True)
    # y = a + b x + c x^2 + d x^3 from the state_dict, in float64 with NumPy, not model code.
    a = float(state["linear.bias"][0])
    b, c, d = (float(w) for w in state["linear.weight"][0])
    xs = ["-3.1", "-1.5", "-2.5e-1", "0", "0.7", "2", "3.14159"]
    points = [f"--x={value}" for value in xs]  # --x adds points; "-2.5e-1" alone reads as an option
    x = np.float32([float(v) for v in xs]).astype(np.float64)  # the float32 points predict uses
    terms = np.stack([np.full_like(x, a), b * x, c * x**2, d * x**3])  # (4, N)
    local = polyfit("predict", *points, cwd=project, env=None)
    assert local.returncode == 0, local.stderr
    predicted = np.array([float(line.split()[1]) for line in local.stdout.splitlines()])
    # float32 evaluation: a few roundings of each term's size (powers, products, the sum).
    bound = 8 * np.finfo(np.float32).eps * np.abs(terms).sum(axis=0)
    assert np.all(np.abs(predicted - terms.sum(axis=0)) <= bound), (predicted, terms.sum(axis=0))

    uri = f"sqlite:///{project / 'mlflow.db'}"
    model_sha = sha256((project / paths.MODEL).read_bytes())
    train = next(r for r in runs_of(uri, stage="train") if r.data.tags["model_sha256"] == model_sha)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    model_uri = f"runs:/{train.info.run_id}/model"  # the LoggedModel, loaded by MLflow
    logged = polyfit("predict", *points, "--model", model_uri, cwd=project, env=env)
    assert logged.returncode == 0, logged.stderr
    assert logged.stdout == local.stdout
