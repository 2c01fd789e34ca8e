"""MLflow logging read back from a real SQLite store: params, history, tags, artifacts, status."""

import io
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import mlflow_client, prepare_stage_dir, runs_of

from polyfit import files, paths
from polyfit.errors import Interrupted
from polyfit.stages import evaluate, generate, train
from polyfit.tracking import runs as tracked_runs
from polyfit.tracking import store


@pytest.fixture(scope="module")
def finished_pipeline(tmp_path_factory) -> Path:
    """The three stages, run once in-process on small params; the tests only read what they
    left (outputs and store)."""
    folder = tmp_path_factory.mktemp("pipeline")
    with pytest.MonkeyPatch.context() as monkeypatch:
        prepare_stage_dir(folder, monkeypatch)
        for stage in (generate, train, evaluate):
            stage.main()
    return folder


@pytest.fixture
def pipeline(finished_pipeline, monkeypatch):
    """The finished pipeline's folder as the working directory; return its store's URI."""
    monkeypatch.chdir(finished_pipeline)
    uri = f"sqlite:///{finished_pipeline / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def only(runs):
    assert len(runs) == 1, [run.info.run_name for run in runs]
    return runs[0]


def test_each_stage_is_one_finished_run_named_after_it(pipeline):
    runs = runs_of(pipeline)
    assert sorted(run.data.tags["stage"] for run in runs) == ["evaluate", "generate", "train"]
    assert {run.info.status for run in runs} == {"FINISHED"}
    names = {run.data.tags["stage"]: run.info.run_name for run in runs}
    assert names["train"] == "train RMSprop lr=0.001"
    assert names["generate"] == "generate sin n=2000"


def test_train_run_params_are_the_ones_it_used(pipeline):
    logged = only(runs_of(pipeline, stage="train")).data.params
    assert logged["train.optimizer"] == "RMSprop"
    assert logged["train.lr"] == "0.001"
    assert logged["train.steps"] == "300"
    assert logged["model.degree"] == "3"
    assert logged["train.options.RMSprop.alpha"] == "0.99"
    assert not [key for key in logged if key.startswith("train.options.Adam")]


def test_full_loss_history_matches_the_dvc_outputs(pipeline):
    run = only(runs_of(pipeline, stage="train"))
    history = mlflow_client(pipeline).get_metric_history(run.info.run_id, "loss")
    history = sorted(history, key=lambda point: point.step)
    assert [point.step for point in history] == list(range(300))
    curve = paths.LOSS_CURVE.read_text().splitlines()[1:]
    assert [point.value for point in history] == [float(line.split(",")[1]) for line in curve]
    final = json.loads(paths.TRAIN_METRICS.read_text())["final_loss"]
    assert run.data.metrics["final_loss"] == final == history[-1].value


def test_tags_link_runs_to_the_bytes_they_read_and_wrote(pipeline):
    data_sha = files.sha256(paths.DATASET.read_bytes())
    model_sha = files.sha256(paths.MODEL.read_bytes())
    runs = {run.data.tags["stage"]: run for run in runs_of(pipeline)}
    assert runs["generate"].data.tags["data_sha256"] == data_sha
    assert runs["train"].data.tags["data_sha256"] == data_sha
    assert runs["train"].data.tags["model_sha256"] == model_sha
    assert runs["evaluate"].data.tags["model_sha256"] == model_sha
    assert runs["evaluate"].data.tags["mlflow.parentRunId"] == runs["train"].info.run_id
    for run in runs.values():
        assert {"mlflow.source.git.commit", "git_dirty", "host", "pid"} <= run.data.tags.keys()


def test_logged_model_holds_the_dvc_out_byte_for_byte(pipeline, tmp_path):
    import mlflow

    run = only(runs_of(pipeline, stage="train"))
    client = mlflow_client(pipeline)
    model = client.get_logged_model(run.data.tags["model_id"])
    downloaded = mlflow.artifacts.download_artifacts(
        f"{model.artifact_location}/artifacts/model.pt",
        dst_path=str(tmp_path),
        tracking_uri=pipeline,
    )
    with open(downloaded, "rb") as handle:
        content = handle.read()
    assert content == paths.MODEL.read_bytes()
    state = torch.load(io.BytesIO(content), weights_only=True)
    expected = torch.load(paths.MODEL, weights_only=True)
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[key], expected[key]) for key in state)


def test_eval_metrics_land_on_the_train_run(pipeline):
    scored = json.loads(paths.EVAL_METRICS.read_text())
    train_metrics = only(runs_of(pipeline, stage="train")).data.metrics
    eval_metrics = only(runs_of(pipeline, stage="evaluate")).data.metrics
    for key, value in scored.items():
        assert train_metrics[f"eval.{key}"] == value == eval_metrics[key]


def test_each_train_run_registers_a_model_version(pipeline):
    run = only(runs_of(pipeline, stage="train"))
    versions = mlflow_client(pipeline).search_model_versions("name = 'polyfit-cubic'")
    assert [v.run_id for v in versions] == [run.info.run_id]
    assert run.data.tags["registered_version"] == str(versions[0].version)


def _status_after(body) -> tuple:
    """Run `body` inside a stage run; return the run's final status and tags."""
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
    caught, status, _ = _status_after(lambda: _raise(KeyboardInterrupt()))
    assert caught.type is KeyboardInterrupt
    assert status == "KILLED"


def test_sigterm_ends_the_run_killed_and_restores_the_handler(stage_dir):
    before = signal.getsignal(signal.SIGTERM)
    caught, status, _ = _status_after(lambda: os.kill(os.getpid(), signal.SIGTERM))
    assert caught.type is Interrupted
    assert status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is before


def test_experiment_is_created_once(stage_dir):
    first = store.connect("polyfit")[1]
    assert store.connect("polyfit")[1] == first


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
    assert train_run.data.tags["torch.threads"] == "1"  # train.threads
