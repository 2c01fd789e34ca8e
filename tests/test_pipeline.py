"""End to end: `dvc repro` of the repo's own pipeline, whatever params.yaml holds, in a scratch
copy of the repo with its real MLflow store; then the train stage's own settings (mini-batches,
the device), in-process on the machinery tests' table."""

from pathlib import Path
from typing import NamedTuple

import mlflow
import pandas as pd
import pytest
import torch
import yaml
from conftest import (
    OUTPUTS,
    REPO,
    STAGES,
    clean_env,
    command,
    lock_inputs,
    make_project,
    mlflow_client,
    polyfit,
    run,
    runs_of,
    table_params,
    write_params,
)

from polyfit import files, paths
from polyfit.core.batches import full_batch
from polyfit.core.fit import build_optimizer, fit, summed_squared_error
from polyfit.core.model import build_model
from polyfit.tracking.registry import SCORE

TRACKED_STAGES = sorted(stage for stage in STAGES if stage != "check")  # check writes nothing


def repro(project, *args):
    done = run(["dvc", "repro", *args], project)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


def snapshot(project) -> dict:
    return {str(path): (project / path).read_bytes() for path in [*OUTPUTS, "dvc.lock"]}


class Reproduced(NamedTuple):
    project: Path
    output: str  # what `dvc repro` printed
    lock: str  # dvc.lock as it wrote it
    gate: object  # `polyfit gate --baseline HEAD` right after it
    runs: list  # the MLflow runs it recorded
    model_sha256: str


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Reproduced:
    """One `dvc repro` of the repo's params.yaml in a copy with no MLflow store yet, shared by the
    tests below, and what it left, read before any test changes the copy (any order works)."""
    project = make_project(tmp_path_factory.mktemp("e2e") / "project", store=False)
    output = repro(project)
    return Reproduced(
        project,
        output,
        (project / "dvc.lock").read_text(),
        polyfit("gate", "--baseline", "HEAD", cwd=project),
        runs_of(f"sqlite:///{project / 'mlflow.db'}"),
        files.sha256((project / paths.MODEL).read_bytes()),
    )


def project_params(project: Path) -> dict:
    return yaml.safe_load((project / "params.yaml").read_text())


@pytest.mark.slow
def test_repro_runs_the_four_stages_and_matches_the_committed_results(reproduced):
    # `check` writes nothing: the committed dvc.lock has it up to date, params.yaml unchanged.
    ran = ran_stages(reproduced.output)
    assert ran == ["generate", "train", "evaluate"], f"{ran}: is dvc.lock committed up to date?"
    assert "Result: " in reproduced.output  # train prints the model
    # What each stage read from the repo (code, params) is recorded exactly as committed. What the
    # stages wrote, and so what a later stage read from an earlier one, is the same bytes only on
    # the CPU that made the lock (another vendor rounds the last float32 bits differently), so
    # those are held to the committed metrics by the gate's tolerances, as CI does.
    assert lock_inputs(reproduced.lock) == lock_inputs((REPO / "dvc.lock").read_text())
    gate = reproduced.gate
    assert gate.returncode == 0, gate.stdout + gate.stderr


@pytest.mark.slow
def test_every_stage_is_tracked_in_the_store_at_the_repo_root(reproduced):
    project, runs = reproduced.project, reproduced.runs
    uri = f"sqlite:///{project / 'mlflow.db'}"
    assert sorted(r.data.tags["stage"] for r in runs) == TRACKED_STAGES
    assert {r.info.status for r in runs} == {"FINISHED"}
    train = next(r for r in runs if r.data.tags["stage"] == "train")
    evaluate = next(r for r in runs if r.data.tags["stage"] == "evaluate")
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    assert train.data.tags["mlflow.source.git.commit"] == head
    assert train.data.tags["git_dirty"] == "false"
    client = mlflow_client(uri)
    steps = project_params(project)["train"]["steps"]
    history = client.get_metric_history(train.info.run_id, "loss")
    assert sorted(point.step for point in history) == list(range(steps))
    # The model, its LoggedModel, and evaluate's scores on it, linked.
    assert train.data.tags["model_sha256"] == reproduced.model_sha256
    logged = client.get_logged_model(train.data.tags["model_id"])
    assert logged.tags["model_sha256"] == reproduced.model_sha256
    assert evaluate.data.tags["mlflow.parentRunId"] == train.info.run_id
    assert evaluate.data.tags["model_id"] == logged.model_id
    assert SCORE in client.get_run(train.info.run_id).data.metrics
    assert (project / "mlartifacts").is_dir()
    assert not list((project / paths.CHECKPOINTS).glob("*.pt"))  # removed once trained


@pytest.mark.slow
def test_second_repro_runs_nothing_and_forced_repro_is_byte_identical(reproduced):
    project = reproduced.project
    before = snapshot(project)
    assert ran_stages(repro(project)) == []
    assert ran_stages(repro(project, "-f")) == ["check", "generate", "train", "evaluate"]
    assert snapshot(project) == before


@pytest.mark.slow
def test_a_train_param_change_reruns_train_and_evaluate_only(reproduced):
    """And `check`, which validates any change to params.yaml; generate's data stays."""
    project = reproduced.project
    params = project_params(project)
    params["train"]["lr"] *= 2
    write_params(project, params)
    data = (project / paths.TRAIN_DATA).read_bytes()
    assert ran_stages(repro(project)) == ["check", "train", "evaluate"]
    assert (project / paths.TRAIN_DATA).read_bytes() == data


@pytest.fixture
def in_project(reproduced, monkeypatch):
    """Commands run in this process, in the reproduced project, with its store; MLflow's
    process-wide URIs, which loading a model sets, put back afterwards."""
    project = reproduced.project
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # load_model sets it
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield project
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])


def predictions(output: str) -> list[float]:
    """The prediction column of predict's CSV."""
    return [float(line.split(",")[-1]) for line in output.splitlines()[1:]]


@pytest.mark.slow
def test_predict_gives_the_models_predictions(in_project, reproduced, capsys):
    project = in_project
    held_out, _ = files.load_table(project / paths.HELD_OUT_DATA)
    X, features = held_out.X[:7], list(held_out.features)
    # The features in another order, and a column predict ignores.
    header = ["note", *reversed(features)]
    rows = [["a", *(repr(v) for v in reversed(row))] for row in X.tolist()]
    (project / "rows.csv").write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")

    code, local, err = command(capsys, "predict", "--csv", "rows.csv")
    assert code == 0, err
    assert local.splitlines()[0] == ",".join([*features, "prediction"])
    model = build_model(project_params(project)["model"], len(features))
    model.load_state_dict(torch.load(project / paths.MODEL, weights_only=True))
    with torch.no_grad():
        expected = model(X).tolist()
    assert predictions(local) == expected
    assert [line.split(",")[:-1] for line in local.splitlines()[1:]] == [
        [repr(v) for v in row] for row in X.tolist()
    ]

    points = [f"--x={row[0]!r}" for row in X.tolist()]  # --x=-2.5e-1: not read as an option
    code, by_x, err = command(capsys, "predict", *points)
    if len(features) == 1:
        assert (code, by_x) == (0, local), err
    else:
        assert (code, by_x) == (2, "")
        assert err == (
            f"polyfit predict: error: --x gives one feature; the model takes {features}: "
            "use --csv\n"
        )

    runs = runs_of(f"sqlite:///{project / 'mlflow.db'}", stage="train")
    model_sha = files.sha256((project / paths.MODEL).read_bytes())
    train = next(r for r in runs if r.data.tags["model_sha256"] == model_sha)
    model_uri = f"runs:/{train.info.run_id}/model"  # the LoggedModel, loaded by MLflow
    code, logged, err = command(capsys, "predict", "--csv", "rows.csv", "--model", model_uri)
    assert (code, logged) == (0, local), err


# --- the train stage's settings, in this process on the table ---

TRAINED = [paths.MODEL, paths.LOSS_CURVE, paths.TRAIN_METRICS]


def train_with(folder: Path, **train) -> dict[str, bytes]:
    """Train on the table with these train params; the bytes of what train wrote."""
    from polyfit.stages import train as stage

    write_params(folder, table_params(**train))
    stage.main()
    return {str(path): (folder / path).read_bytes() for path in TRAINED}


@pytest.fixture
def table_dir(stage_dir):
    """A stage folder where generate has written the table's training and held-out rows."""
    from polyfit.stages import generate

    generate.main()
    return stage_dir


def test_mini_batches_train_to_the_same_bytes_on_every_run(table_dir):
    first = train_with(table_dir, batch_size=16)
    assert train_with(table_dir, batch_size=16) == first
    curve = first[str(paths.LOSS_CURVE)].decode().splitlines()
    assert len(curve) == 1 + table_params()["train"]["steps"]  # header, a loss a step
    # The seed decides the batches' order (and the initial weights); the full batch differs.
    assert train_with(table_dir, batch_size=16, seed=1) != first
    assert train_with(table_dir, batch_size=None) != first


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto means cuda here (see the CUDA test)")
def test_device_auto_and_cpu_train_to_the_same_bytes_without_a_gpu(table_dir):
    cpu = train_with(table_dir, device="cpu")
    assert train_with(table_dir, device="auto") == cpu
    runs = runs_of(f"sqlite:///{table_dir / 'mlflow.db'}", stage="train")
    assert sorted(r.data.params["train.device"] for r in runs) == ["auto", "cpu"]
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_device_cuda_without_a_gpu_fails_in_one_line(table_dir):
    write_params(table_dir, table_params(device="cuda"))
    store = f"sqlite:///{table_dir / 'mlflow.db'}"
    done = polyfit("train", cwd=table_dir, env=clean_env(MLFLOW_TRACKING_URI=store))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "polyfit train: error: train.device: cuda, but torch sees no CUDA device on this machine\n"
    )
    assert not (table_dir / paths.MODEL).exists()
    assert runs_of(store, stage="train") == []  # refused before any run was opened


CUDA_STEPS = 50  # float32 rounding differences between the devices grow with every step


def train_loop_on(device: str, table, model_params: dict):
    """The train stage's loop on `device`: (loss history, state_dict on the CPU, the devices of
    the data, the model and the loss at every step)."""
    torch.manual_seed(0)
    model = build_model(model_params, len(table.features)).to(device)
    options = table_params()["train"]["options"]["RMSprop"]
    optimizer = build_optimizer("RMSprop", model.parameters(), 0.01, options)
    seen = set()

    def loss_function(model, X, y):
        loss = summed_squared_error(model, X, y)
        weights = {p.device.type for p in model.parameters()}
        seen.add((X.device.type, y.device.type, *sorted(weights), loss.device.type))
        return loss

    batches = full_batch(table.X.to(device), table.y.to(device))
    history = fit(model, optimizer, batches, CUDA_STEPS, 10, 1e3, loss_function)
    return history, {k: v.cpu() for k, v in model.state_dict().items()}, seen


def loss_curve(trained: dict[str, bytes]) -> torch.Tensor:
    """The loss column of plots/loss.csv."""
    lines = trained[str(paths.LOSS_CURVE)].decode().splitlines()[1:]
    return torch.tensor([float(line.split(",")[1]) for line in lines])


def assert_float32_close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), (a - b).abs().max().item()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; torch sees none")
def test_training_on_cuda_agrees_with_the_cpu_and_saves_and_serves_on_the_cpu(
    table_dir, monkeypatch
):
    from polyfit.stages import evaluate
    from polyfit.tracking.model import load_model

    table, _ = files.load_table(table_dir / paths.TRAIN_DATA)
    model_params = table_params()["model"]
    # The loop: data, model and loss on the GPU, the same path as on the CPU.
    on_gpu, gpu_state, seen = train_loop_on("cuda", table, model_params)
    on_cpu, cpu_state, _ = train_loop_on("cpu", table, model_params)
    assert seen == {("cuda",) * 4}
    assert_float32_close(torch.tensor(on_gpu), torch.tensor(on_cpu))
    for name, tensor in cpu_state.items():
        assert_float32_close(gpu_state[name], tensor)

    # The stage: trained on the GPU, saved and scored on the CPU, served by MLflow on the CPU.
    torch.cuda.reset_peak_memory_stats()
    cuda = train_with(table_dir, device="cuda", steps=CUDA_STEPS)
    assert torch.cuda.max_memory_allocated() >= table.X.nbytes  # the data went to the GPU
    saved = torch.load(table_dir / paths.MODEL, weights_only=True)  # as saved: no map_location
    assert {tensor.device.type for tensor in saved.values()} == {"cpu"}
    evaluate.main()
    cpu = train_with(table_dir, device="cpu", steps=CUDA_STEPS)
    cpu_saved = torch.load(table_dir / paths.MODEL, weights_only=True)
    for name, tensor in cpu_saved.items():
        assert_float32_close(saved[name], tensor)
    assert_float32_close(loss_curve(cuda), loss_curve(cpu))

    store = f"sqlite:///{table_dir / 'mlflow.db'}"
    trained = [r for r in runs_of(store, stage="train") if r.data.params["train.device"] == "cuda"]
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # load_model sets it
    served = load_model(f"models:/{trained[0].data.tags['model_id']}")
    weights = served.unwrap_python_model().model.parameters()
    assert {p.device.type for p in weights} == {"cpu"}
    model = build_model(model_params, len(table.features))
    model.load_state_dict(saved)
    rows = pd.DataFrame(table.X[:5].double().numpy(), columns=list(table.features))
    with torch.no_grad():
        assert served.predict(rows) == model(table.X[:5]).tolist()
