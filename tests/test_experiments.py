"""DVC experiments land in the one MLflow store at the repo root; `champion` moves on merit."""

import os

import pytest
from conftest import dvc, mlflow_client, polyfit, queue_workers, runs_of, wait_for_queue

pytestmark = pytest.mark.slow

SWEEP = {"adam": ("Adam", "0.01"), "sgd": ("SGD", "1e-06"), "lbfgs": ("LBFGS", "1.0")}


def test_queued_sweep_on_two_workers_lands_every_run_in_the_root_store(project):
    for name, (optimizer, lr) in SWEEP.items():
        dvc(
            project,
            "exp",
            "run",
            "--queue",
            "--name",
            name,
            "-S",
            f"train.optimizer={optimizer}",
            "-S",
            f"train.lr={lr}",
            "-S",
            "train.steps=300",
        )
    with queue_workers(project, jobs=2):
        status = wait_for_queue(project)
    assert status.count("Success") == 3, status

    uri = f"sqlite:///{project / 'mlflow.db'}"
    trains = runs_of(uri, stage="train")
    assert len(trains) == 3
    by_exp = {r.data.tags["dvc_exp"]: r for r in trains}
    assert by_exp.keys() == SWEEP.keys()
    for name, (optimizer, lr) in SWEEP.items():
        train = by_exp[name]
        assert train.info.status == "FINISHED"
        assert train.data.params["train.optimizer"] == optimizer
        assert float(train.data.params["train.lr"]) == float(lr)
        assert train.info.run_name == f"train {optimizer} lr={float(lr):g} [{name}]"
        history = mlflow_client(uri).get_metric_history(train.info.run_id, "loss")
        assert len(history) == 300
        assert "eval.train_set.mse" in train.data.metrics  # evaluate found its train run
    assert len(runs_of(uri, stage="evaluate")) == 3
    # nothing was tracked inside DVC's temporary copies
    assert not list((project / ".dvc" / "tmp").rglob("mlflow.db"))


def test_workspace_experiment_with_set_params(project):
    dvc(
        project,
        "exp",
        "run",
        "-S",
        "train.optimizer=Adam",
        "-S",
        "train.lr=0.01",
        "-S",
        "train.steps=300",
    )
    uri = f"sqlite:///{project / 'mlflow.db'}"
    train = runs_of(uri, stage="train")[0]
    assert train.data.params["train.optimizer"] == "Adam"
    assert train.data.tags.get("dvc_exp")


def test_champion_alias_moves_only_on_improvement(project):
    uri = f"sqlite:///{project / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # version 1: a short, poor run; version 2: the default, better one; version 3: poor again
    for steps in ("300", "2000", "200"):
        dvc(project, "exp", "run", "-S", f"train.steps={steps}")
    client = mlflow_client(uri)

    def champion():
        return client.get_model_version_by_alias("polyfit-cubic", "champion").version

    first = polyfit("promote", "--version", "1", cwd=project, env=env)
    assert first.returncode == 0, first.stderr
    assert champion() == 1
    better = polyfit("promote", "--version", "2", cwd=project, env=env)
    assert better.returncode == 0, better.stderr
    assert champion() == 2
    worse = polyfit("promote", cwd=project, env=env)  # newest = version 3
    assert worse.returncode == 1
    assert "does not beat champion version 2" in worse.stderr
    assert champion() == 2
    same = polyfit("promote", "--version", "2", cwd=project, env=env)
    assert same.returncode == 1 and champion() == 2
