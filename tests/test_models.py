"""MLflow-native records: the trained model is a LoggedModel that loads and serves, registry
versions point at it, every run names the dataset it read, evaluate nests under its train run."""

import contextlib
import os
import subprocess
import sys
import textwrap
import time

import pytest
import requests
import torch
import yaml
from conftest import (
    clean_env,
    dvc,
    make_project,
    mlflow_client,
    polyfit,
    runs_of,
    small_params,
)
from servers import free_port, stop_server

from polyfit import paths

pytestmark = pytest.mark.slow

XS = [-3.0, -1.25, 0.0, 0.5, 2.75]
CHAMPION = "models:/polyfit-cubic@champion"


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """`dvc repro` on short training, then `polyfit promote`: (project, store URI, env)."""
    project = make_project(tmp_path_factory.mktemp("models") / "project", small_params())
    uri = f"sqlite:///{project / 'mlflow.db'}"
    env = clean_env(MLFLOW_TRACKING_URI=uri)
    dvc(project, "repro", env=env)
    promoted = polyfit("promote", cwd=project, env=env)
    assert promoted.returncode == 0, promoted.stderr
    return project, uri, env


def stage_runs(uri: str) -> dict:
    return {run.data.tags["stage"]: run for run in runs_of(uri)}


def test_train_logs_a_logged_model_of_the_dvc_output(reproduced, tmp_path):
    project, uri, _ = reproduced
    client = mlflow_client(uri)
    train = stage_runs(uri)["train"]
    model = client.get_logged_model(train.data.tags["model_id"])
    assert model.source_run_id == train.info.run_id
    assert str(model.status) in ("READY", "LoggedModelStatus.READY")
    files = {info.path for info in client.list_logged_model_artifacts(model.model_id)}
    assert {"MLmodel", "serving.py", "requirements.txt", "input_example.json"} <= files
    assert not [name for name in files if name.endswith((".pkl", ".pickle"))]
    import mlflow

    state_dict = mlflow.artifacts.download_artifacts(
        f"{model.artifact_location}/artifacts/model.pt", dst_path=str(tmp_path), tracking_uri=uri
    )
    with open(state_dict, "rb") as logged_bytes:
        assert logged_bytes.read() == (project / paths.MODEL).read_bytes()
    requirements = (project / "requirements.txt").read_text()
    logged = mlflow.artifacts.download_artifacts(
        f"{model.artifact_location}/requirements.txt", dst_path=str(tmp_path), tracking_uri=uri
    )
    with open(logged) as pins:  # pinned explicitly, and as the project pins them
        logged_pins = pins.read().split()
    assert len(logged_pins) == 2
    for pin in logged_pins:
        assert pin.split("==")[0] in ("torch", "mlflow") and pin.split("[")[0] in requirements


def test_registry_version_is_the_logged_model(reproduced):
    _, uri, _ = reproduced
    client = mlflow_client(uri)
    train = stage_runs(uri)["train"]
    version = client.get_model_version_by_alias("polyfit-cubic", "champion")
    assert version.source == f"models:/{train.data.tags['model_id']}"
    assert version.run_id == train.info.run_id


def by_hand(state_dict: dict, xs: list[float]) -> list[float]:
    """a + b x + c x^2 + d x^3 from the saved coefficients, in float64."""
    (b, c, d) = state_dict["linear.weight"][0].double().tolist()
    a = state_dict["linear.bias"].item()
    return [a + b * x + c * x**2 + d * x**3 for x in xs]


def load_in_fresh_process(env: dict) -> list[float]:
    """mlflow.pyfunc.load_model(champion).predict(XS) in a new interpreter, pickles refused."""
    script = textwrap.dedent(
        f"""
        import mlflow.pyfunc
        print(mlflow.pyfunc.load_model({CHAMPION!r}).predict({XS!r}))
        """
    )
    safe = {**env, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    done = subprocess.run([sys.executable, "-c", script], env=safe, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def served(project, env: dict, folder):
    """`polyfit serve` (`make serve`: mlflow models serve of the champion, --env-manager local)
    on a free 127.0.0.1 port; yields its URL."""
    port = free_port()
    log = folder / "serve.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "polyfit", "serve", "--port", str(port)],
            cwd=project,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown stops uvicorn's workers too
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            time.sleep(0.5)
        assert f"serving {CHAMPION} at {url}/invocations" in log.read_text()
        yield url
    finally:
        stop_server(server)


def printed(done) -> list[float]:
    assert done.returncode == 0, done.stderr
    return [float(line.split()[1]) for line in done.stdout.splitlines()]


def test_champion_loads_serves_and_predicts_the_same_numbers(reproduced, tmp_path):
    project, _, env = reproduced
    state_dict = torch.load(project / paths.MODEL, weights_only=True)
    expected = by_hand(state_dict, XS)

    loaded = load_in_fresh_process(env)
    with served(project, env, tmp_path) as url:
        answer = requests.post(f"{url}/invocations", json={"inputs": XS}, timeout=60)
        columns = {"columns": ["x"], "data": [[x] for x in XS]}  # the README's other format
        split = requests.post(f"{url}/invocations", json={"dataframe_split": columns}, timeout=60)
    assert answer.status_code == 200, answer.text
    serving = answer.json()["predictions"]
    assert split.json()["predictions"] == serving
    command = printed(
        polyfit("predict", "--model", CHAMPION, "--x", *map(str, XS), cwd=project, env=env)
    )
    dvc_output = printed(polyfit("predict", "--x", *map(str, XS), cwd=project, env=env))

    assert loaded == serving == command == dvc_output  # one model, four ways in: same float32s
    assert loaded == pytest.approx(expected, rel=1e-6, abs=1e-6)  # float32 against float64


def test_predict_takes_any_model_uri(reproduced):
    project, uri, env = reproduced
    train = stage_runs(uri)["train"]
    uris = [f"runs:/{train.info.run_id}/model", f"models:/{train.data.tags['model_id']}"]
    results = [
        printed(polyfit("predict", "--model", u, "--x", "0.5", cwd=project, env=env)) for u in uris
    ]
    assert results[0] == results[1]
    missing = polyfit(
        "predict", "--model", "models:/polyfit-cubic/99", "--x", "1", cwd=project, env=env
    )
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "Traceback" not in missing.stderr


def test_evaluate_nests_under_the_train_run_and_scores_its_model(reproduced):
    _, uri, _ = reproduced
    client = mlflow_client(uri)
    runs = stage_runs(uri)
    train, evaluate = runs["train"], runs["evaluate"]
    assert evaluate.data.tags["mlflow.parentRunId"] == train.info.run_id
    assert "mlflow.parentRunId" not in train.data.tags
    model_id = train.data.tags["model_id"]
    read = client.get_run(evaluate.info.run_id).inputs.model_inputs  # search_runs leaves them out
    assert [m.model_id for m in read] == [model_id]
    model_metrics = {m.key: m for m in client.get_logged_model(model_id).metrics}
    assert model_metrics["train_set.mse"].value == evaluate.data.metrics["train_set.mse"]
    assert model_metrics["train_set.mse"].dataset_name == str(paths.DATASET)
    assert "final_loss" in model_metrics
    assert train.data.metrics["eval.train_set.mse"] == evaluate.data.metrics["train_set.mse"]


def test_every_run_names_the_dataset_dvc_lock_records(reproduced):
    project, uri, _ = reproduced
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    (out,) = [o for o in lock["stages"]["generate"]["outs"] if o["path"] == str(paths.DATASET)]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True)
    contexts = {}
    for stage, run in stage_runs(uri).items():
        (used,) = run.inputs.dataset_inputs
        assert (used.dataset.name, used.dataset.digest) == (str(paths.DATASET), out["md5"])
        assert yaml.safe_load(used.dataset.source)["git_commit"] == head.stdout.strip()
        contexts[stage] = {tag.key: tag.value for tag in used.tags}["mlflow.data.context"]
    assert contexts == {"generate": "generated", "train": "training", "evaluate": "evaluation"}
    found = mlflow_client(uri).search_runs(
        [runs_of(uri)[0].info.experiment_id], f"dataset.digest = '{out['md5']}'"
    )
    assert len(found) == 3  # the UI's Dataset filter finds every run that read it


def test_versions_from_before_logged_models_get_one_line(reproduced, tmp_path):
    """A version registered from a run folder (no MLmodel), as older polyfit did."""
    project, uri, env = reproduced
    client = mlflow_client(uri)
    experiment = runs_of(uri)[0].info.experiment_id
    old = client.create_run(experiment, tags={"stage": "train"})
    client.log_artifact(old.info.run_id, str(project / paths.MODEL), "model")
    client.set_terminated(old.info.run_id)
    source = f"{old.info.artifact_uri}/model"
    version = str(
        client.create_model_version("polyfit-cubic", source, run_id=old.info.run_id).version
    )
    for args in (
        ["promote", "--version", version],
        ["predict", "--model", f"models:/polyfit-cubic/{version}", "--x", "1"],
    ):
        done = polyfit(*args, cwd=project, env=env)
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert "not an MLflow model" in done.stderr


def test_a_stage_process_never_imports_torch(tmp_path):
    """The stage process imports MLflow while its worker imports torch; a top-level torch import
    anywhere on the stage's path would silently cost the overlap."""
    from fault_tools import stage_folder, store_env

    folder = stage_folder(tmp_path / "stage", small_params())
    report = tmp_path / "torch-modules.txt"
    script = textwrap.dedent(
        f"""
        import atexit, sys
        from polyfit.cli import main
        def record():  # the worker ends with os._exit: this runs in the stage process only
            loaded = [name for name in sys.modules if name.split(".")[0] == "torch"]
            open({str(report)!r}, "w").write(" ".join(loaded))
        atexit.register(record)
        main([sys.argv[1]])
        """
    )
    for stage in ("generate", "train", "evaluate"):
        done = subprocess.run(
            [sys.executable, "-c", script, stage],
            cwd=folder,
            env=store_env(folder),
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert report.read_text() == "", f"{stage} imported {report.read_text()[:200]}"
        assert os.path.getsize(folder / "mlflow.db") > 0
