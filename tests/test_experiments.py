"""DVC experiments in the workspace land in the one MLflow store at the repo root, with the
datasets dvc.lock records; the registry: the first model of a fresh project is version 1 and
champion, later trainings register nothing, and `polyfit promote` registers a model only when it
beats the champion on the same data. (Queued experiments: tests/test_sweep.py with a SQLite
store, tests/test_team.py with a tracking server.)"""

import mlflow
import pytest
import yaml
from conftest import (
    clean_env,
    dvc,
    make_project,
    mlflow_client,
    polyfit,
    run,
    runs_of,
    table_params,
    write_params,
)

from polyfit import cli, paths
from polyfit.stages import evaluate, generate, train
from polyfit.tracking.registry import SCORE

PARAMS = table_params()
NAME = PARAMS["mlflow"]["registered_model"]
STEPS = PARAMS["train"]["steps"]
FEW_STEPS = 10  # a model far from trained: any model scores worse than after STEPS


class Experiments:
    """A project after `dvc exp run` in the workspace (the first model), then a training of
    FEW_STEPS and its evaluation in this process (a later, worse model), both tracked to the
    store at its root (no MLFLOW_TRACKING_URI)."""

    def __init__(self, project, env, output: str):
        self.project, self.env, self.output = project, env, output
        self.uri = f"sqlite:///{project / 'mlflow.db'}"
        trains = sorted(runs_of(self.uri, stage="train"), key=lambda r: r.info.start_time)
        self.exp_train, self.later_train = trains


@pytest.fixture(scope="module")
def experiments(tmp_path_factory) -> Experiments:
    project = make_project(tmp_path_factory.mktemp("experiments") / "project", PARAMS)
    env = clean_env()  # no MLFLOW_*: the store at the repo root, also from DVC's exp copies
    output = dvc(project, "exp", "run", env=env)
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(project)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        write_params(project, table_params(steps=FEW_STEPS))
        train.main()
        evaluate.main()
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])
    return Experiments(project, env, output)


@pytest.mark.slow
def test_a_workspace_experiment_lands_in_the_store_at_the_repo_root(experiments):
    uri, exp = experiments.uri, experiments.exp_train
    name = exp.data.tags["dvc_exp"]
    assert name and exp.info.run_name.endswith(f" [{name}]")
    runs = runs_of(uri)
    assert {found.info.status for found in runs} == {"FINISHED"}
    in_exp = sorted(r.data.tags["stage"] for r in runs if r.data.tags.get("dvc_exp") == name)
    assert in_exp == ["evaluate", "generate", "train"]  # every stage, tagged with the experiment
    assert "dvc_exp" not in experiments.later_train.data.tags  # trained outside it
    # evaluate scored the experiment's own model, nested under its train run
    evaluated = [r for r in runs_of(uri, stage="evaluate") if r.data.tags.get("dvc_exp") == name]
    assert [r.data.tags["mlflow.parentRunId"] for r in evaluated] == [exp.info.run_id]
    assert evaluated[0].data.tags["model_id"] == exp.data.tags["model_id"]
    assert SCORE in exp.data.metrics
    stores = [p for p in experiments.project.rglob("mlflow.db") if ".venv" not in p.parts]
    assert stores == [experiments.project / "mlflow.db"]
    # Logging the model runs it on the input example: no warning, no MLflow log line.
    assert "arning" not in experiments.output and " INFO " not in experiments.output


@pytest.mark.slow
def test_every_run_names_the_datasets_dvc_lock_records(experiments):
    """The MLflow datasets are the files dvc.lock records (name = path, digest = its md5), so the
    UI's Dataset filter finds every run that read a version of the data."""
    project, uri = experiments.project, experiments.uri
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    outs = {out["path"]: out["md5"] for out in lock["stages"]["generate"]["outs"]}
    assert outs.keys() == {str(paths.TRAIN_DATA), str(paths.HELD_OUT_DATA)}
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    client = mlflow_client(uri)
    readers = {}
    for found in runs_of(uri):
        for used in client.get_run(found.info.run_id).inputs.dataset_inputs:
            assert used.dataset.digest == outs[used.dataset.name]
            assert yaml.safe_load(used.dataset.source)["git_commit"] == head
            readers.setdefault(used.dataset.name, set()).add(found.info.run_id)
    experiment_id = runs_of(uri)[0].info.experiment_id
    for path, md5 in outs.items():
        by_digest = client.search_runs([experiment_id], f"dataset.digest = '{md5}'")
        assert {r.info.run_id for r in by_digest} == readers[path]
    stages = {r.info.run_id: r.data.tags["stage"] for r in runs_of(uri)}
    read_by = {path: sorted(stages[i] for i in ids) for path, ids in readers.items()}
    assert read_by == {
        str(paths.TRAIN_DATA): ["generate", "train", "train"],
        str(paths.HELD_OUT_DATA): ["evaluate", "evaluate", "generate"],
    }


@pytest.mark.slow
def test_the_first_model_is_champion_and_promote_moves_it_only_on_merit(experiments):
    """Version 1 (the first model) is champion with no promote; the later training registered
    nothing; `polyfit promote --model` of a worse model is refused in one line."""
    first, later = experiments.exp_train, experiments.later_train
    client = mlflow_client(experiments.uri)
    versions = client.search_model_versions(f"name = '{NAME}'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", first.info.run_id)]
    assert first.data.tags["registered_version"] == "1"
    assert "registered_version" not in later.data.tags
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    champion, worse = first.data.metrics[SCORE], later.data.metrics[SCORE]
    assert worse > champion, f"{FEW_STEPS} steps scored better than {STEPS}"

    model_id = later.data.tags["model_id"]
    refused = polyfit("promote", "--model", model_id, cwd=experiments.project, env=experiments.env)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        f"polyfit promote: error: model {model_id} ({SCORE} {worse:.6g}) does not beat "
        f"champion version 1 ({champion:.6g}); alias unchanged\n"
    )
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"


# --- the registry's rules, in this process on the table ---


@pytest.fixture
def project_dir(stage_dir, monkeypatch):
    """stage_dir, with MLflow's process-wide URIs (which commands set) put back afterwards."""
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield stage_dir
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])


def promote(capsys, *args: str) -> tuple[int, str, str]:
    """`polyfit promote ARGS` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()  # what the stages printed before
    code = 0
    try:
        cli.main(["promote", *args])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def trained(folder, params: dict, *stages, **train_params) -> tuple[str, float | None]:
    """Train (then run `stages`) on `params` with these train params in this process: the
    LoggedModel's id and its score (None if not scored)."""
    write_params(folder, {**params, "train": params["train"] | train_params})
    for stage in (train, *stages):
        stage.main()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    newest = max(runs_of(uri, stage="train"), key=lambda r: r.info.start_time)
    return newest.data.tags["model_id"], newest.data.metrics.get(SCORE)


def test_promote_compares_only_models_trained_and_scored_on_the_current_data(project_dir, capsys):
    folder = project_dir
    client = mlflow_client(f"sqlite:///{folder / 'mlflow.db'}")
    generate.main()
    first, _ = trained(folder, PARAMS, evaluate)  # version 1, champion
    # The data changes (another split of the table): the champion was trained on other data.
    other_split = table_params()
    other_split["data"]["csv"]["split_seed"] = 1
    write_params(folder, other_split)
    generate.main()
    scored = [trained(folder, other_split, evaluate, steps=steps) for steps in (FEW_STEPS, STEPS)]
    (best, best_score), (worse, worse_score) = sorted(scored, key=lambda model: model[1])
    assert worse_score > best_score
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1  # trains register nothing

    code, out, err = promote(capsys, "--model", worse)
    assert (code, err) == (0, "")
    assert out == (
        f"{NAME} version 2 is now champion: {SCORE} {worse_score:.6g}; 1 scored on other data "
        "not compared (champion version 1 was trained or scored on other data, so it was not "
        "compared)\n"
    )
    code, out, err = promote(capsys)
    assert (code, err) == (0, "")
    assert out == (
        f"{NAME} version 3 is now champion: {SCORE} {best_score:.6g}, the best of 2 model(s) "
        "trained and scored on the current data; 1 scored on other data not compared "
        f"(champion version 2 had {worse_score:.6g})\n"
    )
    versions = {str(v.version): v.source for v in client.search_model_versions(f"name = '{NAME}'")}
    assert versions == {"1": f"models:/{first}", "2": f"models:/{worse}", "3": f"models:/{best}"}

    code, out, err = promote(capsys, "--model", worse)
    assert (code, out) == (1, "")
    assert err == (
        f"polyfit promote: error: model {worse} ({SCORE} {worse_score:.6g}) does not beat "
        f"champion version 3 ({best_score:.6g}); alias unchanged\n"
    )
    code, out, err = promote(capsys, "--model", first)
    assert (code, out) == (2, "")
    assert err == (
        f"polyfit promote: error: model {first} was not trained and scored on the current data\n"
    )
    code, out, err = promote(capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"{NAME} version 3 stays champion: {SCORE} {best_score:.6g}, the best")
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 3
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "3"


def test_promote_without_a_scored_model_says_to_run_the_pipeline(project_dir, capsys):
    generate.main()
    trained(project_dir, PARAMS)  # registered (the first model), but never scored
    code, out, err = promote(capsys)
    assert (code, out) == (2, "")
    assert err == (
        f"polyfit promote: error: no model trained on {paths.TRAIN_DATA} as it is now has a "
        f"{SCORE} on {paths.HELD_OUT_DATA}: run `dvc repro` first\n"
    )
