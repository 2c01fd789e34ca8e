"""Team setup on a real server: MLflow on PostgreSQL with proxied artifacts and basic auth, as
a team runs it, and a DVC remote; the pipeline runs on the machinery tests' table.

The server is started by scripts/server.sh (what `make server` runs) on a free loopback port,
once for the module; every client signs in as its admin.
"""

import contextlib
import secrets
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg2
import pytest
import requests
from conftest import (
    STAGES,
    clean_env,
    dvc,
    make_project,
    mlflow_client,
    polyfit,
    runs_of,
    table_params,
)
from servers import mlflow_server

pytestmark = pytest.mark.slow
POSTGRES = "postgres@127.0.0.1:5432"
# SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; the project installs psycopg2-binary.
MLFLOW_POSTGRES = f"postgresql+psycopg2://{POSTGRES}"
TRACKED = [stage for stage in STAGES if stage != "check"]  # check validates, tracks nothing


def experiment_params(experiment: str) -> dict:
    """Short training on the table, tracked under its own experiment and registered model, so
    each test counts only its runs and versions, in any order."""
    params = table_params()
    params["mlflow"] |= {"experiment": experiment, "registered_model": experiment}
    return params


TEAM_PARAMS = experiment_params("team-pipeline")
PASSWORD = secrets.token_urlsafe(16)
CREDENTIALS = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": PASSWORD}


def member_env(url: str) -> dict:
    """A team member's shell: the server's URL and their credentials exported."""
    return clean_env(MLFLOW_TRACKING_URI=url, **CREDENTIALS)


@pytest.fixture(scope="module")
def postgres_database():
    """The name of a fresh PostgreSQL database, dropped at the end."""
    name = f"polyfit_test_{uuid.uuid4().hex[:12]}"
    try:
        connection = psycopg2.connect(f"postgresql://{POSTGRES}/postgres", connect_timeout=5)
    except psycopg2.OperationalError as error:
        pytest.fail(f"PostgreSQL is not running on 127.0.0.1:5432 ({error}); .ci/run starts it")
    connection.autocommit = True  # CREATE/DROP DATABASE refuse to run inside a transaction
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        connection.close()


@pytest.fixture(scope="module")
def team_server(postgres_database, tmp_path_factory):
    """(url, server folder) of one tracking server for this module: runs in the fresh database,
    artifacts in folder/artifacts, basic auth with its user database in folder/auth. While the
    module runs, this process has the admin's credentials exported (runs_of, mlflow_client)."""
    folder = tmp_path_factory.mktemp("team-server")
    database_uri = f"{MLFLOW_POSTGRES}/{postgres_database}"
    auth = {
        "POLYFIT_AUTH": "1",
        "POLYFIT_AUTH_DIR": str(folder / "auth"),
        "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
    }
    with (
        mlflow_server(folder, backend_store_uri=database_uri, workers=2, **auth) as (url, _),
        pytest.MonkeyPatch.context() as patch,
    ):
        for name, value in CREDENTIALS.items():
            patch.setenv(name, value)
        yield url, folder


def postgres_run_count(database: str, experiment: str) -> int:
    uri = f"postgresql://{POSTGRES}/{database}"
    with contextlib.closing(psycopg2.connect(uri)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM runs JOIN experiments USING (experiment_id) "
            "WHERE experiments.name = %s",
            (experiment,),
        )
        return cursor.fetchone()[0]


def loss_column(project: Path) -> list[float]:
    lines = (project / "plots" / "loss.csv").read_text().splitlines()[1:]
    return [float(line.split(",")[1]) for line in lines]


def assert_model_artifact_matches(client, run_id: str, project: Path, scratch: Path) -> None:
    """The LoggedModel on the server holds the state_dict DVC tracks, byte for byte, and the
    code that builds it."""
    import mlflow

    logged = client.get_logged_model(client.get_run(run_id).data.tags["model_id"])
    assert logged.source_run_id == run_id

    def download(name: str) -> bytes:
        path = mlflow.artifacts.download_artifacts(
            f"{logged.artifact_location}/{name}",
            dst_path=str(scratch),
            tracking_uri=client.tracking_uri,
        )
        return Path(path).read_bytes()

    assert download("artifacts/model.pt") == (project / "models" / "model.pt").read_bytes()
    code = project / "src" / "polyfit" / "core" / "model.py"
    assert download("artifacts/model.py") == code.read_bytes()


@pytest.fixture(scope="module")
def team_project(team_server, tmp_path_factory) -> Path:
    """A project whose `dvc repro` tracked every stage on the team server: built once here."""
    url, _ = team_server
    project = make_project(tmp_path_factory.mktemp("team") / "project", TEAM_PARAMS, store=False)
    dvc(project, "repro", env=member_env(url))
    return project


def test_pipeline_tracks_everything_on_the_team_server(
    team_server, team_project, postgres_database, tmp_path
):
    url, folder = team_server
    params, project = TEAM_PARAMS, team_project

    runs = {stage: runs_of(url, "team-pipeline", stage) for stage in TRACKED}
    assert {stage: len(found) for stage, found in runs.items()} == dict.fromkeys(TRACKED, 1)
    assert postgres_run_count(postgres_database, "team-pipeline") == 3  # stored in PostgreSQL
    train = runs["train"][0]
    assert all(found[0].info.status == "FINISHED" for found in runs.values())
    assert float(train.data.params["train.lr"]) == params["train"]["lr"]
    assert train.data.params["train.optimizer"] == params["train"]["optimizer"]
    assert "eval.held_out.mse" in train.data.metrics  # evaluate's scores on the train run

    client = mlflow_client(url)
    history = sorted(client.get_metric_history(train.info.run_id, "loss"), key=lambda m: m.step)
    assert [point.step for point in history] == list(range(params["train"]["steps"]))
    assert [point.value for point in history] == loss_column(project)
    assert_model_artifact_matches(client, train.info.run_id, project, tmp_path)
    assert train.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied by the server
    model = client.get_logged_model(train.data.tags["model_id"])
    stored = model.artifact_location.removeprefix("mlflow-artifacts:/") + "/artifacts/model.pt"
    assert (folder / "artifacts" / stored).exists(), "the server's artifact store holds the model"
    # The project's first model: version 1 and champion on the server's registry.
    assert train.data.tags["registered_version"] == "1"
    version = client.get_model_version_by_alias(params["mlflow"]["registered_model"], "champion")
    assert (str(version.version), version.run_id) == ("1", train.info.run_id)
    assert version.source == f"models:/{train.data.tags['model_id']}"
    assert not (project / "mlflow.db").exists()
    assert not (project / "mlartifacts").exists()


def test_basic_auth_refuses_strangers_and_admits_the_team(team_server, team_project, tmp_path):
    """Without the password nothing gets in, the pipeline included; with it, team_project's
    `dvc repro` tracked every stage (the test above checks what)."""
    url, folder = team_server
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, timeout=10).status_code == 401
    wrong = requests.get(search, auth=("admin", "not-the-password"), timeout=10)
    assert wrong.status_code == 401
    stranger_project = make_project(tmp_path / "stranger", TEAM_PARAMS, store=False)
    stranger = polyfit("generate", cwd=stranger_project, env=clean_env(MLFLOW_TRACKING_URI=url))
    assert stranger.returncode != 0
    assert "401" in stranger.stdout + stranger.stderr
    assert all(len(runs_of(url, "team-pipeline", stage)) == 1 for stage in TRACKED)  # the team's
    assert_password_change_works(url, PASSWORD)
    assert (folder / "auth" / "basic_auth.db").exists()
    assert PASSWORD not in (folder / "auth" / "basic_auth.ini").read_text()


def assert_password_change_works(url: str, password: str) -> None:
    """The documented self-service rotation: the old password stops working, the new one works.
    Rotated back afterwards: the module's clients keep signing in with `password`."""
    new_password = secrets.token_urlsafe(16)
    whoami = f"{url}/api/2.0/mlflow/users/current"
    for old, new in [(password, new_password), (new_password, password)]:
        changed = requests.patch(
            f"{url}/api/2.0/mlflow/users/update-password",
            json={"username": "admin", "password": new, "current_password": old},
            auth=("admin", old),
            timeout=10,
        )
        assert changed.status_code == 200, changed.text
        assert requests.get(whoami, auth=("admin", old), timeout=10).status_code == 401
        assert requests.get(whoami, auth=("admin", new), timeout=10).status_code == 200


def git(args: list[str], cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_dvc_remote_lets_a_fresh_clone_skip_every_stage(
    team_server, team_project, postgres_database, tmp_path
):
    url, _ = team_server
    origin, remote = tmp_path / "origin", str(tmp_path / "remote")
    shutil.copytree(team_project, origin, symlinks=True)  # the module's project stays as built
    # --local: a directory path is machine-specific; an S3 remote would go in .dvc/config.
    dvc(origin, "remote", "add", "--local", "-d", "storage", remote)
    dvc(origin, "push")
    git(["add", "-A"], origin)  # dvc.lock and the committed metrics
    git(["commit", "-qm", "pipeline outputs"], origin)

    clone = tmp_path / "clone"
    git(["clone", "-q", str(origin), str(clone)], tmp_path)
    dvc(clone, "remote", "add", "--local", "-d", "storage", remote)
    dvc(clone, "pull")
    model = Path("models") / "model.pt"
    assert (clone / model).read_bytes() == (origin / model).read_bytes()
    assert "Data and pipelines are up to date." in dvc(clone, "status")
    reproduced = dvc(clone, "repro", env=member_env(url))
    assert "Running stage" not in reproduced
    assert all(f"Stage '{stage}' didn't change, skipping" in reproduced for stage in STAGES)
    assert postgres_run_count(postgres_database, "team-pipeline") == 3  # no stage ran: no run
