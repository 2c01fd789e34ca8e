"""The trained model as MLflow serves it: a LoggedModel with a typed signature and pinned
requirements that loads with pickles refused, serves (`polyfit serve`: rows by position or named
columns in any order, refusals with a 400 and the reason) and predicts the same numbers as the
DVC output; every registered version loads with the code it was trained with, whatever the code
is now; serve and predict say what to do when a model is missing, and stay quiet.

The project is built in this process on the machinery tests' table (generate, train, evaluate);
the servers, and a second architecture's training, are real processes."""

import contextlib
import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest
import requests
import torch
from conftest import (
    REPO,
    TABLE_FEATURES,
    clean_env,
    command,
    mlflow_client,
    polyfit,
    prepare_stage_dir,
    runs_of,
    table_params,
    venv_off_path,
    write_params,
)
from servers import free_port, stop_server

from polyfit import files, paths
from polyfit.core.model import build_model
from polyfit.stages import evaluate, generate, train

PARAMS = table_params()
NAME = PARAMS["mlflow"]["registered_model"]
CHAMPION = f"models:/{NAME}@champion"
# Rows of (u, v), exact in float32: every way in computes the same float32 predictions.
ROWS = [[-1.0, 0.5], [-0.25, -0.75], [0.0, 0.0], [0.5, 0.125], [0.875, -1.0]]


@contextlib.contextmanager
def in_folder(folder: Path, monkeypatch, prepare: bool = False):
    """Stages and commands in this process, in `folder` with its store; MLflow's process-wide
    URIs, which they set, put back afterwards."""
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        if prepare:
            prepare_stage_dir(folder, monkeypatch)
        else:
            monkeypatch.chdir(folder)
            monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # load_model sets it
        yield folder
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """generate, train and evaluate on the table, in this process: the first model is version 1
    and champion."""
    folder = tmp_path_factory.mktemp("models")
    with pytest.MonkeyPatch.context() as monkeypatch, in_folder(folder, monkeypatch, True):
        for stage in (generate, train, evaluate):
            stage.main()
    return folder


def store(project: Path) -> str:
    return f"sqlite:///{project / 'mlflow.db'}"


def env_of(project: Path) -> dict:
    return clean_env(MLFLOW_TRACKING_URI=store(project))


@pytest.fixture
def here(project, monkeypatch):
    """The project as this process's working folder and store."""
    with in_folder(project, monkeypatch):
        yield project


def train_run(project: Path):
    (found,) = runs_of(store(project), stage="train")
    return found


def expected(project: Path, rows=ROWS) -> list[float]:
    """What the DVC output models/model.pt predicts, through the repo's own model code."""
    model = build_model(PARAMS["model"], len(TABLE_FEATURES))
    files.load_weights(project / paths.MODEL, model)
    with torch.no_grad():
        return model(torch.tensor(rows)).tolist()


def write_rows(path: Path, columns=TABLE_FEATURES, rows=ROWS) -> Path:
    path.write_text("\n".join(",".join(map(str, line)) for line in [columns, *rows]) + "\n")
    return path


def predictions(output: str) -> list[float]:
    """The prediction column of predict's CSV."""
    return [float(line.split(",")[-1]) for line in output.splitlines()[1:]]


def test_the_logged_model_declares_its_types_and_pins_its_requirements(project, tmp_path):
    """A signature (shown in the UI): a double out per row, the input left to the model's own
    checks (the tests below), the input example naming the features; torch and mlflow pinned as
    the project pins them, so MLflow infers nothing in a subprocess."""
    from mlflow.models import Model

    logged = mlflow_client(store(project)).get_logged_model(
        train_run(project).data.tags["model_id"]
    )

    def download(name: str) -> Path:
        return Path(
            mlflow.artifacts.download_artifacts(
                f"{logged.artifact_location}/{name}",
                dst_path=str(tmp_path),
                tracking_uri=store(project),
            )
        )

    signature = Model.load(download("MLmodel")).signature
    column = {"type": "double", "required": True}
    assert signature.inputs is None
    assert signature.outputs.to_dict() == [column]
    example = json.loads(download("serving_input_example.json").read_text())
    assert example["dataframe_split"]["columns"] == TABLE_FEATURES
    assert logged.tags["features"] == ",".join(TABLE_FEATURES)
    pins = download("requirements.txt").read_text().split()
    project_pins = (REPO / "requirements.txt").read_text().split()
    assert sorted(pin.split("==")[0] for pin in pins) == ["mlflow", "torch"]
    assert all(pin in project_pins for pin in pins), pins


def load_in_fresh_process(uris: list[str], env: dict) -> dict[str, list[float]]:
    """mlflow.pyfunc.load_model(uri).predict(ROWS as a DataFrame) for each uri, all in one new
    interpreter with pickles refused; MLflow has nothing to warn about."""
    script = textwrap.dedent(
        f"""
        import json
        import mlflow.pyfunc
        import pandas as pd
        rows = pd.DataFrame({ROWS!r}, columns={TABLE_FEATURES!r})
        models = {{uri: mlflow.pyfunc.load_model(uri) for uri in {uris!r}}}
        print(json.dumps({{uri: model.predict(rows) for uri, model in models.items()}}))
        """
    )
    safe = {**env, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    done = subprocess.run([sys.executable, "-c", script], env=safe, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def served(project: Path, env: dict, log: Path, *options: str):
    """`polyfit serve` (`make serve`: mlflow models serve of the champion, --env-manager local)
    on a free 127.0.0.1 port; yields its URL."""
    port = free_port()
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
        else:
            pytest.fail(f"polyfit serve did not answer in 120 s:\n{log.read_text()[-3000:]}")
        assert f"serving {CHAMPION} at {url}/invocations" in log.read_text()
        yield url
    finally:
        stop_server(server)


class Server:
    def __init__(self, url: str, log: Path):
        self.url, self.log = url, log

    def post(self, body: dict) -> requests.Response:
        return requests.post(f"{self.url}/invocations", json=body, timeout=60)

    @contextlib.contextmanager
    def quiet(self):
        """The block's requests add nothing to the server's log, which says where it serves: no
        INFO or access log lines, download bar or library warnings."""
        assert self.log.read_text().startswith(f"serving {CHAMPION} at {self.url}/invocations\n")
        before = len(self.log.read_text())
        yield
        assert self.log.read_text()[before:] == ""


@pytest.fixture(scope="module")
def server(project, tmp_path_factory):
    """One `polyfit serve` of the champion for the module, from a shell without the venv on
    PATH (`.venv/bin/polyfit serve`)."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with served(project, venv_off_path(env_of(project)), log) as url:
        # Started quietly: the URL line only, no INFO lines, startup banner or warnings.
        assert log.read_text() == f"serving {CHAMPION} at {url}/invocations\n"
        yield Server(url, log)


def split(columns: list[str], rows: list[list]) -> dict:
    return {"dataframe_split": {"columns": columns, "data": rows}}


@pytest.mark.slow
def test_champion_loads_serves_and_predicts_the_same_numbers(here, server, tmp_path, capsys):
    """One model, every way in, the same float32 predictions as the DVC output through the
    repo's model code."""
    wanted = expected(here)
    with server.quiet():
        by_rows = server.post({"inputs": ROWS})
        by_columns = server.post(split(TABLE_FEATURES, ROWS))
    assert by_rows.status_code == 200, by_rows.text
    assert by_columns.status_code == 200, by_columns.text
    assert by_rows.json()["predictions"] == by_columns.json()["predictions"] == wanted

    assert load_in_fresh_process([CHAMPION], env_of(here)) == {CHAMPION: wanted}
    rows = str(write_rows(tmp_path / "rows.csv"))
    done = polyfit("predict", "--model", CHAMPION, "--csv", rows, cwd=here, env=env_of(here))
    assert (done.returncode, done.stderr) == (0, "")
    assert predictions(done.stdout) == wanted
    local = command(capsys, "predict", "--csv", rows)  # models/model.pt, without MLflow
    assert local == (0, done.stdout, "")


@pytest.mark.slow
def test_serving_takes_the_named_columns_in_any_order(project, server):
    reordered = [list(reversed(row)) for row in ROWS]
    with server.quiet():
        answer = server.post(split(list(reversed(TABLE_FEATURES)), reordered))
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == expected(project)


WIDTH = len(TABLE_FEATURES)
REFUSED = {  # a request the model cannot answer -> what the 400's message says
    "other column": (
        split([TABLE_FEATURES[0], "w"], ROWS),
        re.escape(f"expected the columns {TABLE_FEATURES}, got {[TABLE_FEATURES[0], 'w']}"),
    ),
    "extra column": (
        split([*TABLE_FEATURES, "w"], [[*row, 1.0] for row in ROWS]),
        re.escape(f"expected the columns {TABLE_FEATURES}, got {[*TABLE_FEATURES, 'w']}"),
    ),
    "missing column": (
        split(TABLE_FEATURES[:1], [row[:1] for row in ROWS]),
        re.escape(f"expected the columns {TABLE_FEATURES}, got {TABLE_FEATURES[:1]}"),
    ),
    "wide rows": (
        {"inputs": [[*row, 1.0] for row in ROWS]},
        rf"expected rows of {WIDTH} value\(s\), got shape \({len(ROWS)}, {WIDTH + 1}\)",
    ),
    "narrow rows": (
        {"inputs": [row[:1] for row in ROWS]},
        rf"expected rows of {WIDTH} value\(s\), got shape \({len(ROWS)}, 1\)",
    ),
    "beyond float32": (
        {"inputs": [[0.5, 1e39]]},
        r"1e\+39 is not a finite float32 number",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize(("body", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_serving_refuses_what_the_model_cannot_answer_with_the_reason(server, body, reason):
    """A 400 that says why, never a prediction from other columns or a nan."""
    answer = server.post(body)
    assert answer.status_code == 400, answer.text
    assert re.search(reason, answer.json()["message"]), answer.json()["message"]


def test_predict_takes_any_model_uri(here, capsys, tmp_path):
    trained = train_run(here)
    uris = [
        f"runs:/{trained.info.run_id}/model",
        f"models:/{trained.data.tags['model_id']}",
        f"models:/{NAME}/1",
        CHAMPION,
    ]
    rows = str(
        write_rows(tmp_path / "rows.csv", list(reversed(TABLE_FEATURES)), [r[::-1] for r in ROWS])
    )
    for uri in uris:
        code, out, err = command(capsys, "predict", "--csv", rows, "--model", uri)
        assert (code, err) == (0, "")
        assert predictions(out) == expected(here), uri


def test_promote_keeps_the_only_model_as_champion(here, capsys):
    scored = train_run(here).data.metrics["eval.held_out.mse"]
    code, out, err = command(capsys, "promote")
    assert (code, err) == (0, "")
    assert out == (
        f"{NAME} version 1 stays champion: eval.held_out.mse {scored:.6g}, the best of 1 "
        "model(s) trained and scored on the current data\n"
    )


@pytest.mark.slow
def test_serve_verbose_shows_the_servers_logs(project, tmp_path):
    with served(project, env_of(project), tmp_path / "serve.log", "--verbose"):
        shown = (tmp_path / "serve.log").read_text()
    assert "INFO mlflow" in shown and "Uvicorn running on" in shown


MISSING = {  # a URI that names nothing in the store -> what the one line says
    "version": (f"models:/{NAME}/99", f"'{NAME}' has no version 99; the newest is 1"),
    "model": ("models:/other@champion", "no registered model 'other' in sqlite:///"),
    "alias": (f"models:/{NAME}@best", f"'{NAME}' has no alias 'best'"),
    "run": ("runs:/0123456789abcdef0123456789abcdef/model", "no run 0123456789abcdef"),
    "logged model": ("models:/m-0123456789abcdef0123456789abcdef", "not found in sqlite:///"),
}


def says_what_to_do(code: int, out: str, err: str, command: str, uri: str, expected: str):
    assert code == 2, out + err
    assert err.startswith(f"polyfit {command}: error: {uri}: "), err
    assert expected in err and err.count("\n") == 1, err
    assert out == ""  # no URL printed: serve checked before starting a server


@pytest.mark.parametrize(("uri", "expected"), MISSING.values(), ids=MISSING.keys())
def test_a_missing_model_is_named_with_what_to_do(here, uri, expected, capsys, tmp_path):
    """What predict (and serve) check before loading anything (tracking.model.resolve)."""
    rows = str(write_rows(tmp_path / "rows.csv"))
    code, out, err = command(capsys, "predict", "--csv", rows, "--model", uri)
    says_what_to_do(code, out, err, "predict", uri, expected)


@pytest.mark.slow
def test_serve_refuses_a_missing_model_in_one_line(project):
    uri, expected = MISSING["version"]
    port = str(free_port())
    done = polyfit("serve", "--model", uri, "--port", port, cwd=project, env=env_of(project))
    says_what_to_do(done.returncode, done.stdout, done.stderr, "serve", uri, expected)


def test_a_run_without_a_model_is_named(here, capsys, tmp_path):
    (scored,) = runs_of(store(here), stage="evaluate")
    model = f"runs:/{scored.info.run_id}/model"
    rows = str(write_rows(tmp_path / "rows.csv"))
    code, out, err = command(capsys, "predict", "--csv", rows, "--model", model)
    expected = f"run {scored.info.run_id} logged no model 'model': a train run"
    says_what_to_do(code, out, err, "predict", model, expected)


@pytest.mark.slow
def test_without_a_champion_serve_and_predict_say_run_promote(here, capsys, tmp_path):
    client = mlflow_client(store(here))
    rows = str(write_rows(tmp_path / "rows.csv"))
    client.delete_registered_model_alias(NAME, "champion")
    try:
        expected = f"no version of '{NAME}' is champion yet: run `polyfit promote`"
        done = polyfit("serve", cwd=here, env=env_of(here))
        says_what_to_do(done.returncode, done.stdout, done.stderr, "serve", CHAMPION, expected)
        code, out, err = command(capsys, "predict", "--csv", rows, "--model", CHAMPION)
        says_what_to_do(code, out, err, "predict", CHAMPION, expected)
        code, out, err = command(capsys, "promote")
        assert (code, err) == (0, "")
        # the best model is version 1's: promote points the alias at that version again
        assert out.startswith(f"{NAME} version 1 is now champion: ")
        assert out.endswith("(there was no champion)\n")
    finally:
        client.set_registered_model_alias(NAME, "champion", "1")
        with contextlib.suppress(Exception):
            client.delete_model_version(NAME, "2")


# --- a version trained with other code loads with its own ---

AFFINE = '''

class Affine(torch.nn.Module):
    """Another architecture: y = X w + b."""

    def __init__(self, n_features: int):
        super().__init__()
        self.weights = torch.nn.Parameter(torch.zeros(n_features))
        self.offset = torch.nn.Parameter(torch.zeros(1))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return X @ self.weights + self.offset


def build_model(config: dict, n_features: int) -> torch.nn.Module:
    return Affine(n_features)
'''


def other_code(folder: Path) -> Path:
    """A copy of src/ whose core/model.py builds another class: the repo's file with a new
    class and a build_model that returns it, as a user's edit would leave it. Its model.py."""
    src = folder / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    code = src / "polyfit" / "core" / "model.py"
    code.write_text(code.read_text() + AFFINE)
    return code


def import_file(path: Path):
    """The module at `path` under a name of its own, as the serving code imports a model's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("polyfit_test_other_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_versions_trained_with_other_code_load_with_their_own(tmp_path, monkeypatch, capsys):
    """Version 1 was trained by another core/model.py (another class, other weights), then
    the code and the data changed and version 2 was promoted: in one fresh process, with
    pickles refused and today's code installed, both versions load and predict, each with its
    own code; so does `polyfit predict --model`."""
    folder = tmp_path / "project"
    folder.mkdir()
    code = other_code(tmp_path / "other")
    with in_folder(folder, monkeypatch, prepare=True):
        generate.main()
        done = subprocess.run(  # `polyfit train` as it ran when model.py was the other one
            [sys.executable, "-m", "polyfit", "train"],
            cwd=folder,
            env=env_of(folder) | {"PYTHONPATH": str(code.parents[2])},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        # Logging the model runs it on the input example: no warning, no MLflow log line.
        assert "arning" not in done.stdout + done.stderr and " INFO " not in done.stderr
        first = (folder / paths.MODEL).read_bytes()
        # Today's code: the repo's; and new data (another split of the table).
        params = table_params()
        params["data"]["csv"]["split_seed"] = 1
        write_params(folder, params)
        for stage in (generate, train, evaluate):
            stage.main()
        code_now, out, err = command(capsys, "promote")
        assert (code_now, err) == (0, "")
        assert out.startswith(f"{NAME} version 2 is now champion: ")

        weights = files.load_tensors(paths.MODEL, first)
        with pytest.raises(RuntimeError):  # version 1 does not fit today's model class
            build_model(PARAMS["model"], len(TABLE_FEATURES)).load_state_dict(weights)
        other = import_file(code).build_model(PARAMS["model"], len(TABLE_FEATURES))
        other.load_state_dict(weights)
        with torch.no_grad():
            wanted = {1: other(torch.tensor(ROWS)).tolist(), 2: expected(folder)}
        assert wanted[1] != wanted[2]
        versions = {v: f"models:/{NAME}/{v}" for v in wanted}
        loaded = load_in_fresh_process(list(versions.values()), env_of(folder))
        assert loaded == {uri: wanted[v] for v, uri in versions.items()}
        rows = str(write_rows(tmp_path / "rows.csv"))
        for version, uri in versions.items():
            code_now, out, err = command(capsys, "predict", "--csv", rows, "--model", uri)
            assert (code_now, err) == (0, "")
            assert predictions(out) == wanted[version]

    client = mlflow_client(store(folder))
    logged = client.get_logged_model(client.get_model_version(NAME, "1").source.split("/")[-1])
    logged_code = mlflow.artifacts.download_artifacts(
        f"{logged.artifact_location}/artifacts/model.py",
        dst_path=str(tmp_path / "logged"),
        tracking_uri=store(folder),
    )
    assert Path(logged_code).read_bytes() == code.read_bytes()
