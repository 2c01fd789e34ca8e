"""DVC experiments in the workspace land in the one MLflow store at the repo root; the first
registered version is `champion`, which then moves only on merit. (Queued experiments:
tests/test_sweep.py with a SQLite store, tests/test_team.py with a tracking server.)"""

import os

import pytest
from conftest import copy_made_store, dvc, mlflow_client, polyfit, runs_of, stage_client


@pytest.mark.slow
def test_workspace_experiments_then_champion_moves_only_on_improvement(project):
    """`dvc exp run -S` in the workspace, three times: the first registered version is champion,
    which then moves only to a better one."""
    uri = f"sqlite:///{project / 'mlflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # version 1: a short, poor run; version 2: the default, better one; version 3: poor again
    for steps in ("300", "2000", "200"):
        dvc(project, "exp", "run", "-S", f"train.steps={steps}")
    trains = runs_of(uri, stage="train")  # workspace experiments: -S lands in the run's params
    assert [r.data.params["train.steps"] for r in trains] == ["200", "2000", "300"]
    assert all(r.data.tags.get("dvc_exp") for r in trains)
    client = mlflow_client(uri)

    def champion():
        return client.get_model_version_by_alias("polyfit-cubic", "champion").version

    assert champion() == 1  # the first registered version, with no promote
    better = polyfit("promote", "--version", "2", cwd=project, env=env)
    assert better.returncode == 0, better.stderr
    assert champion() == 2
    best = polyfit("promote", cwd=project, env=env)  # the best, not the newest (version 3)
    assert best.returncode == 0, best.stderr
    assert best.stdout.startswith("polyfit-cubic version 2 stays champion: ")
    assert champion() == 2
    worse = polyfit("promote", "--version", "3", cwd=project, env=env)
    assert worse.returncode == 1
    assert "does not beat champion version 2" in worse.stderr
    assert champion() == 2
    same = polyfit("promote", "--version", "2", cwd=project, env=env)
    assert same.returncode == 1 and champion() == 2

    client.set_registered_model_alias("polyfit-cubic", "champion", "3")  # a poor champion
    moved = polyfit("promote", cwd=project, env=env)
    assert moved.returncode == 0, moved.stderr
    scores = {v: score(client, v) for v in ("1", "2", "3")}
    assert scores["2"] < scores["1"] and scores["2"] < scores["3"]
    assert moved.stdout == (
        f"polyfit-cubic version 2 is now champion: eval.train_set.mse {scores['2']:.6g}, the "
        f"lowest of 3 scored version(s) (champion version 3 had {scores['3']:.6g})\n"
    )
    assert champion() == 2


def score(client, version: str) -> float:
    run_id = client.get_model_version("polyfit-cubic", version).run_id
    return client.get_run(run_id).data.metrics["eval.train_set.mse"]


def logged_model(client, experiment_id: str, metrics: dict) -> tuple[str, str]:
    """A run with these metrics and its LoggedModel, as train and evaluate leave them (no
    artifacts: the registry never reads them): (run id, model id)."""
    from mlflow.entities import Metric

    run_id = client.create_run(experiment_id, tags={"stage": "train"}).info.run_id
    client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
    model_id = client.create_logged_model(experiment_id, name="model", source_run_id=run_id)
    return run_id, model_id.model_id


@pytest.fixture
def store_client(tmp_path):
    """A client of a new SQLite store (its tables made), made as the stages make theirs."""
    copy_made_store(tmp_path)
    with stage_client(f"sqlite:///{tmp_path / 'mlflow.db'}") as client:
        yield client


def test_registry_promotes_the_best_scored_version_and_skips_unscored(store_client):
    """register() and promote() on a real SQLite store: the first version is champion, promote
    moves it to the lowest score and skips versions evaluate has not scored."""
    from polyfit.errors import UsageError
    from polyfit.tracking import registry

    client = store_client
    experiment_id = client.create_experiment("polyfit")
    unscored = logged_model(client, experiment_id, {"final_loss": 1.0})
    assert registry.register(client, *unscored, "m") == 1
    with pytest.raises(UsageError, match=r"no model version has eval\.train_set\.mse yet"):
        registry.promote(client, "m", None)
    for mse in (0.5, 0.25, 0.75):
        registry.register(client, *logged_model(client, experiment_id, {registry.SCORE: mse}), "m")
    assert client.get_model_version_by_alias("m", "champion").version == 1  # still the first
    message = registry.promote(client, "m", None)
    assert message == (
        "m version 3 is now champion: eval.train_set.mse 0.25, the lowest of 3 scored "
        "version(s) (champion version 1 had no eval.train_set.mse)"
    )
    assert client.get_model_version_by_alias("m", "champion").version == 3
