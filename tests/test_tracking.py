"""MLflow logging read back from a real SQLite store, the stages run in this process on the
machinery tests' table: one run per stage, the params and loss history it used, tags and
datasets that link runs to the bytes they read and wrote, the LoggedModel (the DVC output and the
code that builds it), evaluate's scores on the train run, the registry's first version, how runs
end (FAILED, KILLED), and the machine they ran on."""

import contextlib
import hashlib
import json
import os
import signal
import threading
from pathlib import Path

import mlflow
import pytest
import torch
from conftest import (
    mlflow_client,
    prepare_stage_dir,
    runs_of,
    stage_client,
    table_params,
    write_params,
)

from polyfit import files, paths
from polyfit.core import model as model_code
from polyfit.core.model import build_model
from polyfit.errors import Interrupted
from polyfit.stages import evaluate, generate, train
from polyfit.tracking import runs as tracked_runs
from polyfit.tracking import store
from polyfit.tracking.registry import SCORE

PARAMS = table_params()
REGISTERED = PARAMS["mlflow"]["registered_model"]


@contextlib.contextmanager
def in_stage_dir(folder: Path):
    """`folder` made a stage folder on the table (prepare_stage_dir) for the block, in this
    process; MLflow's process-wide URIs, which a stage sets, put back afterwards."""
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            prepare_stage_dir(folder, monkeypatch)
            yield
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


@pytest.fixture(scope="module")
def finished_pipeline(tmp_path_factory) -> Path:
    """generate, train and evaluate, run once in this process; the tests only read what they
    left (outputs and store)."""
    folder = tmp_path_factory.mktemp("pipeline")
    with in_stage_dir(folder):
        for stage in (generate, train, evaluate):
            stage.main()
    return folder


@pytest.fixture
def pipeline(finished_pipeline, monkeypatch) -> str:
    """The finished pipeline's folder as the working directory; return its store's URI."""
    monkeypatch.chdir(finished_pipeline)
    uri = f"sqlite:///{finished_pipeline / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def only(runs):
    assert len(runs) == 1, [run.info.run_name for run in runs]
    return runs[0]


def stage_runs(uri: str) -> dict:
    return {run.data.tags["stage"]: run for run in runs_of(uri)}


def md5(path: Path) -> str:
    """The file's md5, as dvc.lock records it."""
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def flat(tree: dict, prefix: str) -> dict:
    """{'a': {'b': 1}} -> {'prefix.a.b': '1'}: how params show in MLflow."""
    found = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            found |= flat(value, f"{prefix}.{key}")
        else:
            found[f"{prefix}.{key}"] = str(value)
    return found


def test_each_stage_is_one_finished_run_named_after_what_it_did(pipeline):
    runs = runs_of(pipeline)
    assert sorted(run.data.tags["stage"] for run in runs) == ["evaluate", "generate", "train"]
    assert {run.info.status for run in runs} == {"FINISHED"}
    names = {run.data.tags["stage"]: run.info.run_name for run in runs}
    trained = PARAMS["train"]
    assert names["train"] == f"train {trained['optimizer']} lr={trained['lr']:g}"
    rows = [len(files.load_table(path)[0].y) for path in (paths.TRAIN_DATA, paths.HELD_OUT_DATA)]
    assert names["generate"] == f"generate csv {rows[0]} + {rows[1]} rows"
    model_sha = files.sha256(paths.MODEL.read_bytes())
    assert names["evaluate"] == f"evaluate model {model_sha[:8]}"


def test_train_run_params_are_the_ones_it_used(pipeline):
    logged = only(runs_of(pipeline, stage="train")).data.params
    trained, optimizer = PARAMS["train"], PARAMS["train"]["optimizer"]
    expected = flat(PARAMS["model"], "model") | flat(PARAMS["data"]["csv"], "data.csv")
    expected |= flat({k: v for k, v in trained.items() if k != "options"}, "train")
    expected |= flat(trained["options"][optimizer], f"train.options.{optimizer}")
    expected["data.source"] = "csv"
    assert logged == expected  # the chosen optimizer's options only; no data.function.*


def test_full_loss_history_matches_the_dvc_outputs(pipeline):
    run = only(runs_of(pipeline, stage="train"))
    history = mlflow_client(pipeline).get_metric_history(run.info.run_id, "loss")
    history = sorted(history, key=lambda point: point.step)
    assert [point.step for point in history] == list(range(PARAMS["train"]["steps"]))
    curve = paths.LOSS_CURVE.read_text().splitlines()[1:]
    assert [point.value for point in history] == [float(line.split(",")[1]) for line in curve]
    final = json.loads(paths.TRAIN_METRICS.read_text())["final_loss"]
    assert run.data.metrics["final_loss"] == final == history[-1].value


def test_tags_link_runs_to_the_bytes_they_read_and_wrote(pipeline):
    data_md5, held_out_md5 = md5(paths.TRAIN_DATA), md5(paths.HELD_OUT_DATA)
    model_sha = files.sha256(paths.MODEL.read_bytes())
    runs = stage_runs(pipeline)
    assert {stage: run.data.tags["data_md5"] for stage, run in runs.items()} == dict.fromkeys(
        runs, data_md5
    )
    assert runs["train"].data.tags["model_sha256"] == model_sha
    evaluated = runs["evaluate"].data.tags
    assert evaluated["model_sha256"] == model_sha
    assert (evaluated["held_out_path"], evaluated["held_out_md5"]) == (
        str(paths.HELD_OUT_DATA),
        held_out_md5,
    )
    assert evaluated["mlflow.parentRunId"] == runs["train"].info.run_id  # nested under it
    assert "mlflow.parentRunId" not in runs["train"].data.tags | runs["generate"].data.tags
    assert evaluated["model_id"] == runs["train"].data.tags["model_id"]
    logged = mlflow_client(pipeline).get_logged_model(runs["train"].data.tags["model_id"])
    assert (logged.tags["model_sha256"], logged.tags["data_md5"]) == (model_sha, data_md5)
    for run in runs.values():
        assert {"mlflow.source.git.commit", "git_dirty", "host", "pid"} <= run.data.tags.keys()


def test_every_run_names_the_datasets_it_read(pipeline):
    """Each file as an MLflow dataset: named by its path, digest = its md5 (as dvc.lock)."""
    client = mlflow_client(pipeline)
    digests = {str(path): md5(path) for path in (paths.TRAIN_DATA, paths.HELD_OUT_DATA)}
    rows = {str(p): len(files.load_table(p)[0].y) for p in (paths.TRAIN_DATA, paths.HELD_OUT_DATA)}
    read = {}
    for stage, run in stage_runs(pipeline).items():
        inputs = client.get_run(run.info.run_id).inputs
        for used in inputs.dataset_inputs:
            dataset = used.dataset
            assert dataset.digest == digests[dataset.name]
            source = json.loads(dataset.source)
            assert (source["path"], source["md5"]) == (dataset.name, dataset.digest)
            assert source["git_commit"]
            assert json.loads(dataset.profile) == {"num_rows": rows[dataset.name]}
            context = {tag.key: tag.value for tag in used.tags}["mlflow.data.context"]
            read.setdefault(stage, set()).add((dataset.name, context))
        read[f"{stage} models"] = {model.model_id for model in inputs.model_inputs or []}
    train_data, held_out = str(paths.TRAIN_DATA), str(paths.HELD_OUT_DATA)
    model_id = stage_runs(pipeline)["train"].data.tags["model_id"]
    assert read == {
        "generate": {(train_data, "training"), (held_out, "held out")},
        "generate models": set(),
        "train": {(train_data, "training")},
        "train models": set(),
        "evaluate": {(held_out, "evaluation")},
        "evaluate models": {model_id},
    }


def test_logged_model_holds_the_dvc_out_and_the_code_that_builds_it(pipeline, tmp_path):
    run = only(runs_of(pipeline, stage="train"))
    client = mlflow_client(pipeline)
    logged = client.get_logged_model(run.data.tags["model_id"])
    assert (logged.source_run_id, logged.name) == (run.info.run_id, "model")
    assert str(logged.status) in ("READY", "LoggedModelStatus.READY")
    listed = [client.list_logged_model_artifacts(logged.model_id, at) for at in (None, "artifacts")]
    names = {info.path for infos in listed for info in infos}
    assert {"MLmodel", "serving.py", "artifacts/model.pt", "artifacts/model.py"} <= names
    assert {"requirements.txt", "input_example.json"} <= names  # pinned; shown in the UI
    assert not [name for name in names if name.endswith((".pkl", ".pickle"))]

    def logged_bytes(name: str) -> bytes:
        path = mlflow.artifacts.download_artifacts(
            f"{logged.artifact_location}/{name}", dst_path=str(tmp_path), tracking_uri=pipeline
        )
        return Path(path).read_bytes()

    state_dict = logged_bytes("artifacts/model.pt")
    assert state_dict == paths.MODEL.read_bytes()
    assert logged_bytes("artifacts/model.py") == Path(model_code.__file__).read_bytes()
    model = build_model(PARAMS["model"], len(PARAMS["data"]["csv"]["features"]))
    model.load_state_dict(files.load_tensors(paths.MODEL, state_dict))  # every key, each shape


def test_eval_metrics_land_on_the_train_run_linked_to_the_model_and_the_held_out_data(pipeline):
    scored = json.loads(paths.EVAL_METRICS.read_text())
    runs = stage_runs(pipeline)
    train_metrics, eval_metrics = runs["train"].data.metrics, runs["evaluate"].data.metrics
    assert SCORE.removeprefix("eval.") in scored
    for key, value in scored.items():
        assert train_metrics[f"eval.{key}"] == value == eval_metrics[key]
    model_id = runs["train"].data.tags["model_id"]
    on_model = mlflow_client(pipeline).get_logged_model(model_id).metrics
    scores = {m.key: m for m in on_model if m.key.startswith("eval.")}
    assert scores.keys() == {f"eval.{key}" for key in scored}
    for key, metric in scores.items():
        assert metric.value == scored[key.removeprefix("eval.")]
        assert (metric.model_id, metric.dataset_name, metric.dataset_digest) == (
            model_id,
            str(paths.HELD_OUT_DATA),
            md5(paths.HELD_OUT_DATA),
        )
        assert metric.run_id == runs["train"].info.run_id
    trained = {m.key: m for m in on_model if not m.key.startswith("eval.")}
    assert trained["final_loss"].dataset_digest == md5(paths.TRAIN_DATA)


def test_the_first_model_of_a_fresh_project_is_version_1_and_champion(pipeline):
    run = only(runs_of(pipeline, stage="train"))
    client = mlflow_client(pipeline)
    (version,) = client.search_model_versions(f"name = '{REGISTERED}'")
    assert (str(version.version), version.run_id) == ("1", run.info.run_id)
    assert version.source == f"models:/{run.data.tags['model_id']}"
    assert run.data.tags["registered_version"] == "1"
    assert client.get_model_version_by_alias(REGISTERED, "champion").version == version.version


@pytest.fixture(scope="module")
def retrained(tmp_path_factory) -> str:
    """generate, train, evaluate, then train again with the same params (the same bytes, as
    `dvc repro --force --single-item train` makes them, with no evaluate after it), then with
    fewer steps (other bytes): the store's URI."""
    folder = tmp_path_factory.mktemp("retrained")
    with in_stage_dir(folder):
        for stage in (generate, train, evaluate, train):
            stage.main()
        write_params(folder, table_params(steps=PARAMS["train"]["steps"] // 2))
        train.main()
    return f"sqlite:///{folder / 'mlflow.db'}"


def train_runs_oldest_first(uri: str) -> list:
    return sorted(runs_of(uri, stage="train"), key=lambda run: run.info.start_time)


def test_later_train_runs_register_nothing(retrained):
    first, again, other = train_runs_oldest_first(retrained)
    versions = mlflow_client(retrained).search_model_versions(f"name = '{REGISTERED}'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", first.info.run_id)]
    assert first.data.tags["registered_version"] == "1"
    assert "registered_version" not in again.data.tags | other.data.tags


def test_a_retrain_to_already_scored_bytes_gets_their_scores(retrained):
    """DVC does not run evaluate for a model file it has seen; the train run that made those
    bytes again carries evaluate's scores all the same, on its own LoggedModel."""
    first, again, other = train_runs_oldest_first(retrained)
    assert again.data.tags["model_sha256"] == first.data.tags["model_sha256"]
    assert len(runs_of(retrained, stage="evaluate")) == 1  # nothing scored the retrain
    scores = {k: v for k, v in first.data.metrics.items() if k.startswith("eval.")}
    assert SCORE in scores
    assert {k: v for k, v in again.data.metrics.items() if k.startswith("eval.")} == scores
    model_id = again.data.tags["model_id"]
    assert model_id != first.data.tags["model_id"]
    on_model = {m.key: m for m in mlflow_client(retrained).get_logged_model(model_id).metrics}
    evaluated = runs_of(retrained, stage="evaluate")[0].data.tags
    assert on_model[SCORE].value == scores[SCORE]
    assert (on_model[SCORE].dataset_name, on_model[SCORE].dataset_digest) == (
        evaluated["held_out_path"],
        evaluated["held_out_md5"],
    )
    # Other bytes (fewer steps) were never scored: no scores to carry.
    assert other.data.tags["model_sha256"] != first.data.tags["model_sha256"]
    assert not [key for key in other.data.metrics if key.startswith("eval.")]


def register_at_once(client, name: str, models: list[tuple[str, str]]) -> None:
    """registry.register_first(name) for each (model id, run id), in threads that start it at
    the same moment."""
    from polyfit.tracking import registry

    start = threading.Barrier(len(models))

    def first(model_id: str, run_id: str) -> None:
        start.wait()
        registry.register_first(client, name, model_id, run_id)

    racers = [threading.Thread(target=first, args=model) for model in models]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()


def test_two_first_trainings_at_once_register_one_version(stage_dir):
    """A queued sweep on a fresh project: its first trainings end together, and each asks the
    registry whether it holds the first model. One of them does, never both (for each of
    several fresh names, two threads call register_first at the same moment)."""
    with stage_client(os.environ["MLFLOW_TRACKING_URI"]) as client:
        experiment_id = client.create_experiment("race")
        for attempt in range(12):
            models = []
            for _ in range(2):  # a train run and its LoggedModel each, as train leaves them
                run_id = client.create_run(experiment_id).info.run_id
                logged = client.create_logged_model(experiment_id, source_run_id=run_id)
                models.append((logged.model_id, run_id))
            register_at_once(client, f"fresh-{attempt}", models)
            versions = client.search_model_versions(f"name = 'fresh-{attempt}'")
            assert [str(v.version) for v in versions] == ["1"], f"attempt {attempt}: {versions}"


def _status_after(body) -> tuple:
    """Run `body` inside a stage run; return what it raised, the run's final status and tags."""
    run = tracked_runs.stage_run("train", store.connect("polyfit"), "probe", {}, {})
    with pytest.raises(BaseException) as caught, run:  # the body decides what it raises
        body()
    ended = only(runs_of(os.environ["MLFLOW_TRACKING_URI"]))
    return caught, ended.info.status, ended.data.tags


def _raise(error):
    raise error


def test_an_error_ends_the_run_failed_with_the_reason(stage_dir):
    caught, status, tags = _status_after(lambda: _raise(RuntimeError("disk full")))
    assert caught.type is RuntimeError
    assert (status, tags["failure_reason"]) == ("FAILED", "disk full")


def test_ctrl_c_ends_the_run_killed(stage_dir):
    caught, status, tags = _status_after(lambda: _raise(KeyboardInterrupt()))
    assert caught.type is KeyboardInterrupt
    assert (status, tags["failure_reason"]) == ("KILLED", "interrupted by SIGINT")


def test_sigterm_ends_the_run_killed_and_restores_the_handler(stage_dir):
    before = signal.getsignal(signal.SIGTERM)
    caught, status, tags = _status_after(lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert caught.type is Interrupted
    assert (status, tags["failure_reason"]) == ("KILLED", "interrupted by SIGTERM")
    assert signal.getsignal(signal.SIGTERM) is before


def test_experiment_is_created_once(stage_dir):
    first = store.connect("polyfit")[1]
    assert store.connect("polyfit")[1] == first
    client = mlflow_client(os.environ["MLFLOW_TRACKING_URI"])
    assert [e.experiment_id for e in client.search_experiments() if e.name == "polyfit"] == [first]
    assert client.get_experiment(first).artifact_location == (stage_dir / "mlartifacts").as_uri()


def test_every_stage_run_records_the_machine_it_ran_on(pipeline):
    """Same params, other numbers: the CPU tags tell the two runs apart (docs/determinism.md)."""
    keys = ["cpu.model", "cpu.vendor", "cpu.capability", "torch.version", "mkl.version"]
    for run in runs_of(pipeline):
        tags = run.data.tags
        assert all(tags.get(key) for key in [*keys, "torch.threads"]), tags
        assert tags["cpu.capability"] == torch.backends.cpu.get_cpu_capability()
        assert tags["torch.version"] == torch.__version__
        assert int(tags["torch.threads"]) >= 1
    train_run = only(runs_of(pipeline, stage="train"))
    assert train_run.data.tags["torch.threads"] == str(PARAMS["train"]["threads"])
