"""MLflow-native records: the trained model is a LoggedModel that loads and serves, registry
versions point at it (the first is champion), every run names the dataset it read, evaluate nests
under its train run; serve and predict say what to do when a model is missing, and stay quiet."""

import contextlib
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
    make_project,
    mlflow_client,
    polyfit,
    run,
    runs_of,
    small_params,
    stage_client,
    venv_off_path,
)
from servers import free_port, stop_server

from polyfit import paths

pytestmark = pytest.mark.slow

XS = [-3.0, -1.25, 0.0, 0.5, 2.75]
CHAMPION = "models:/polyfit-cubic@champion"


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """`dvc repro` on short training, nothing else: (project, store URI, env)."""
    project = make_project(tmp_path_factory.mktemp("models") / "project", small_params())
    uri = f"sqlite:///{project / 'mlflow.db'}"
    env = clean_env(MLFLOW_TRACKING_URI=uri)
    done = run(["dvc", "repro"], project, env)
    assert done.returncode == 0, done.stdout + done.stderr
    # Logging the model runs it on the input example: no warning, no MLflow log line.
    assert "arning" not in done.stdout + done.stderr and " INFO " not in done.stderr
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


def test_registry_version_is_the_logged_model_and_the_first_is_champion(reproduced):
    project, uri, env = reproduced
    client = mlflow_client(uri)
    train = stage_runs(uri)["train"]
    version = client.get_model_version_by_alias("polyfit-cubic", "champion")  # no promote ran
    assert str(version.version) == train.data.tags["registered_version"] == "1"
    assert version.source == f"models:/{train.data.tags['model_id']}"
    assert version.run_id == train.info.run_id
    promoted = polyfit("promote", cwd=project, env=env)  # the best is the champion already
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.startswith("polyfit-cubic version 1 stays champion: ")
    assert "the lowest of 1 scored version(s)" in promoted.stdout


def test_the_logged_model_declares_its_types(reproduced, tmp_path):
    """A signature (shown in the UI), typed from the input example: a list of doubles in,
    a list of doubles out."""
    import mlflow
    from mlflow.models import Model

    _, uri, _ = reproduced
    train = stage_runs(uri)["train"]
    model = mlflow_client(uri).get_logged_model(train.data.tags["model_id"])
    description = mlflow.artifacts.download_artifacts(
        f"{model.artifact_location}/MLmodel", dst_path=str(tmp_path), tracking_uri=uri
    )
    signature = Model.load(description).signature
    assert signature is not None
    assert signature.inputs.to_dict() == [{"type": "double", "required": True}]
    assert signature.outputs.to_dict() == [{"type": "double", "required": True}]


def by_hand(state_dict: dict, xs: list[float]) -> list[float]:
    """a + b x + c x^2 + d x^3 from the saved coefficients, in float64."""
    (b, c, d) = state_dict["linear.weight"][0].double().tolist()
    a = state_dict["linear.bias"].item()
    return [a + b * x + c * x**2 + d * x**3 for x in xs]


def load_in_fresh_process(env: dict) -> list[float]:
    """mlflow.pyfunc.load_model(champion).predict(XS) in a new interpreter, pickles refused;
    MLflow has nothing to warn about."""
    script = textwrap.dedent(
        f"""
        import mlflow.pyfunc
        print(mlflow.pyfunc.load_model({CHAMPION!r}).predict({XS!r}))
        """
    )
    safe = {**env, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    done = subprocess.run([sys.executable, "-c", script], env=safe, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return yaml.safe_load(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def served(project, env: dict, folder, *options: str):
    """`polyfit serve` (`make serve`: mlflow models serve of the champion, --env-manager local)
    on a free 127.0.0.1 port; yields its URL and log (stdout and stderr)."""
    port = free_port()
    log = folder / "serve.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "polyfit", "serve", "--port", str(port), *options],
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
        yield url, log
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
    with served(project, venv_off_path(env), tmp_path) as (url, log):
        answer = requests.post(f"{url}/invocations", json={"inputs": XS}, timeout=60)
        columns = {"columns": ["x"], "data": [[x] for x in XS]}  # the README's other format
        split = requests.post(f"{url}/invocations", json={"dataframe_split": columns}, timeout=60)
        unusable = requests.post(f"{url}/invocations", json={"inputs": [0.5, 1e39]}, timeout=60)
        # The URL line only: no INFO or access log, download bar or library warnings.
        assert log.read_text() == f"serving {CHAMPION} at {url}/invocations\n"
    assert answer.status_code == 200, answer.text
    serving = answer.json()["predictions"]
    assert split.json()["predictions"] == serving
    assert unusable.status_code == 400  # not a nan prediction
    assert "x: 1e+39 is not a finite float32 number" in unusable.json()["message"]
    predicted = polyfit("predict", "--model", CHAMPION, "--x", *map(str, XS), cwd=project, env=env)
    assert predicted.stderr == ""
    command = printed(predicted)
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


def test_serve_verbose_shows_the_servers_logs(reproduced, tmp_path):
    project, _, env = reproduced
    with served(project, env, tmp_path, "--verbose") as (_, log):
        shown = log.read_text()
    assert "INFO mlflow" in shown and "Uvicorn running on" in shown


MISSING = {  # a URI that names nothing in the store -> what the one line says
    "version": ("models:/polyfit-cubic/99", "'polyfit-cubic' has no version 99; the newest is 1"),
    "model": ("models:/other@champion", "no registered model 'other' in sqlite:///"),
    "alias": ("models:/polyfit-cubic@best", "'polyfit-cubic' has no alias 'best'"),
    "run": ("runs:/0123456789abcdef0123456789abcdef/model", "no run 0123456789abcdef"),
    "logged model": ("models:/m-0123456789abcdef0123456789abcdef", "not found in sqlite:///"),
}


def says_what_to_do(done, command: str, uri: str, expected: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"polyfit {command}: error: {uri}: "), done.stderr
    assert expected in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert done.stdout == ""  # no URL printed: serve checked before starting a server


@pytest.mark.parametrize(("uri", "expected"), MISSING.values(), ids=MISSING.keys())
def test_a_missing_model_is_named_with_what_to_do(reproduced, uri, expected, monkeypatch):
    """What serve and predict check before starting anything (tracking.model.resolve), run in
    this process; the commands print it as their one line (the tests below)."""
    from polyfit.errors import UsageError
    from polyfit.tracking.model import resolve

    _, store_uri, _ = reproduced
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    with stage_client(store_uri) as client, pytest.raises(UsageError) as refused:
        resolve(client, uri)
    assert str(refused.value).startswith(f"{uri}: ") and expected in str(refused.value)


def test_serve_refuses_a_missing_model_in_one_line(reproduced):
    project, _, env = reproduced
    uri, expected = MISSING["version"]
    port = str(free_port())
    done = polyfit("serve", "--model", uri, "--port", port, cwd=project, env=env, timeout=120)
    says_what_to_do(done, "serve", uri, expected)


def test_a_run_without_a_model_is_named(reproduced):
    project, uri, env = reproduced
    evaluate = stage_runs(uri)["evaluate"].info.run_id
    model = f"runs:/{evaluate}/model"
    done = polyfit("predict", "--model", model, "--x", "1", cwd=project, env=env)
    says_what_to_do(done, "predict", model, f"run {evaluate} logged no model 'model': a train run")


def test_without_a_champion_serve_and_predict_say_run_promote(reproduced):
    project, uri, env = reproduced
    client = mlflow_client(uri)
    client.delete_registered_model_alias("polyfit-cubic", "champion")
    try:
        expected = "no version of 'polyfit-cubic' is champion yet: run `polyfit promote`"
        says_what_to_do(polyfit("serve", cwd=project, env=env), "serve", CHAMPION, expected)
        predicted = polyfit("predict", "--model", CHAMPION, "--x", "1", cwd=project, env=env)
        says_what_to_do(predicted, "predict", CHAMPION, expected)
        promoted = polyfit("promote", cwd=project, env=env)
        assert promoted.returncode == 0, promoted.stderr
        assert promoted.stdout.startswith("polyfit-cubic version 1 is now champion: ")
        assert promoted.stdout.rstrip().endswith("(there was no champion)")
    finally:
        client.set_registered_model_alias("polyfit-cubic", "champion", "1")


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
    for stage, stage_run in stage_runs(uri).items():
        (used,) = stage_run.inputs.dataset_inputs
        assert (used.dataset.name, used.dataset.digest) == (str(paths.DATASET), out["md5"])
        assert yaml.safe_load(used.dataset.source)["git_commit"] == head.stdout.strip()
        contexts[stage] = {tag.key: tag.value for tag in used.tags}["mlflow.data.context"]
    assert contexts == {"generate": "generated", "train": "training", "evaluate": "evaluation"}
    found = mlflow_client(uri).search_runs(
        [runs_of(uri)[0].info.experiment_id], f"dataset.digest = '{out['md5']}'"
    )
    assert len(found) == 3  # the UI's Dataset filter finds every run that read it
