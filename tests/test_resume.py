"""Training that survives a kill: a `polyfit train` killed with SIGKILL at random steps resumes
from its last checkpoint and ends with the bytes of a training that was never killed, in one
MLflow run; a checkpoint made for other inputs is never used."""

import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    clean_env,
    dvc,
    make_project,
    mlflow_client,
    prepare_stage_dir,
    runs_of,
    table_params,
    write_params,
)

from polyfit import checkpoints, files, paths
from polyfit.core.batches import ShuffledBatches, full_batch, mini_batches
from polyfit.core.fit import build_optimizer, fit
from polyfit.core.model import build_model
from polyfit.core.runtime import configure_torch
from polyfit.params import OPTIMIZERS, validate_params
from polyfit.stages import generate, train
from polyfit.stages.train import restore, snapshot

TRAINED = [paths.MODEL, paths.TRAIN_METRICS, paths.LOSS_CURVE]
# Optimizers and learning rates that train the table without diverging.
LEARNING_RATES = {"SGD": 1e-3, "RMSprop": 1e-2, "Adam": 1e-2, "AdamW": 1e-2, "Adagrad": 0.1}
LEARNING_RATES["LBFGS"] = 0.1


def train_table(folder: Path):
    """The training table generate made in `folder`."""
    return files.load_table(folder / paths.TRAIN_DATA)[0]


def trained_bytes(folder: Path) -> dict[str, bytes]:
    return {str(path): (folder / path).read_bytes() for path in TRAINED}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """The machinery table, made by generate in-process: (folder, Table)."""
    folder = tmp_path_factory.mktemp("resume-table")
    with pytest.MonkeyPatch.context() as monkeypatch:
        prepare_stage_dir(folder, monkeypatch)
        generate.main()
    return folder, train_table(folder)


def training(table, optimizer_name: str, batch_size: int | None, seed: int = 0):
    """(model, optimizer, sampler, batches) as the train stage builds them, on the table."""
    params = validate_params(
        table_params(optimizer=optimizer_name, lr=LEARNING_RATES[optimizer_name], seed=seed)
    )
    configure_torch(1, seed)
    model = build_model(params.model.model_dump(), len(table.features))
    options = params.train.optimizer_options()
    optimizer = build_optimizer(optimizer_name, model.parameters(), params.train.lr, options)
    sampler = ShuffledBatches(len(table.y), batch_size, seed) if batch_size else None
    batches = mini_batches(table.X, table.y, sampler) if sampler else full_batch(table.X, table.y)
    return model, optimizer, sampler, batches


@pytest.mark.parametrize("batch_size", [None, 16], ids=["full-batch", "mini-batches"])
@pytest.mark.parametrize("optimizer_name", OPTIMIZERS)
def test_a_checkpoint_restored_anywhere_continues_to_the_same_bytes(
    table, optimizer_name, batch_size
):
    """Every optimizer, full batch and mini-batches: stop at a random checkpoint, rebuild
    everything from its saved bytes in fresh objects, finish: the same model and losses."""
    steps, every = 60, 5
    model, optimizer, sampler, batches = training(table[1], optimizer_name, batch_size)
    saved = {}

    def keep(losses):
        state = snapshot(model, optimizer, sampler, losses, "run")
        saved[len(losses)] = files.to_bytes(state)  # through the bytes a checkpoint file holds

    uninterrupted = fit(
        model, optimizer, batches, steps, 10, 1e6, checkpoint_every=every, checkpoint=keep
    )
    expected = files.to_bytes(model.state_dict())

    for stop in random.Random(optimizer_name).sample(sorted(saved), 2):
        model, optimizer, sampler, batches = training(table[1], optimizer_name, batch_size)
        torch.manual_seed(12345)  # whatever state the new process has: restore replaces it
        state = files.load_saved(Path("checkpoint"), saved[stop])
        losses = restore(state, model, optimizer, sampler)
        if sampler:
            batches = mini_batches(table[1].X, table[1].y, sampler)
        resumed = fit(model, optimizer, batches, steps, 10, 1e6, losses=losses)
        assert resumed == uninterrupted, f"stopped at {stop}"
        assert files.to_bytes(model.state_dict()) == expected, f"stopped at {stop}"


def kill_at(command: list[str], cwd: Path, env: dict, step: int) -> str:
    """Start `command`, SIGKILL it once it has reported a step at or past `step`; its output."""
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = []
    for line in process.stdout:
        output.append(line)
        words = line.split()
        if len(words) == 2 and words[0].isdigit() and int(words[0]) >= step:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(output)  # killed, not finished
    return "".join(output)


def resumed_from(output: str) -> int:
    line = next(line for line in output.splitlines() if line.startswith("resuming from step "))
    return int(line.split()[3])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("seed", "batch_size", "optimizer_name"), [(1, None, "RMSprop"), (2, 16, "Adam")]
)
def test_a_training_killed_at_random_steps_ends_as_if_never_killed(
    tmp_path, monkeypatch, seed, batch_size, optimizer_name
):
    steps, every = 8000, 500
    params = table_params(
        steps=steps,
        log_every=100,
        checkpoint_every=every,
        batch_size=batch_size,
        optimizer=optimizer_name,
        lr=LEARNING_RATES[optimizer_name],
        seed=seed,
    )
    project = make_project(tmp_path / "project", params)
    uri = f"sqlite:///{project / 'mlflow.db'}"
    env = clean_env(MLFLOW_TRACKING_URI=uri)
    # Never killed: the same training in this process (the same machine, threads and kernels).
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    generate.main()
    train.main()
    never_killed = trained_bytes(project)
    reference = runs_of(uri, stage="train")[0].info.run_id
    for path in TRAINED:
        (project / path).unlink()

    kills = sorted(random.Random(seed).sample(range(every, steps * 3 // 5, 100), 2))
    command = [sys.executable, "-m", "polyfit", "train"]
    first = kill_at(command, project, env, kills[0])
    assert "resuming" not in first
    second = kill_at(command, project, env, kills[1])
    assert resumed_from(second) % every == 0 and resumed_from(second) <= kills[1]
    if batch_size is None:  # the last one through DVC, as a user reruns the pipeline
        last = dvc(project, "repro", env=env)
    else:
        done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        last = done.stdout
    assert resumed_from(last) > resumed_from(second)
    assert trained_bytes(project) == never_killed

    killed = [run for run in runs_of(uri, stage="train") if run.info.run_id != reference]
    assert len(killed) == 1, "the killed and resumed processes share one MLflow run"
    run = killed[0]
    assert run.info.status == "FINISHED"
    history = mlflow_client(uri).get_metric_history(run.info.run_id, "loss")
    assert sorted(point.step for point in history) == list(range(steps))  # each step once
    models = mlflow_client(uri).search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    assert len(models) == 1
    assert not list((project / "checkpoints").glob("*.pt")), "a finished training's is deleted"


@pytest.mark.slow
def test_a_checkpoint_for_other_inputs_is_not_used_and_the_reason_is_said(
    tmp_path, monkeypatch, capsys
):
    params = table_params(steps=400, checkpoint_every=100)
    project = make_project(tmp_path / "project", params)
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    generate.main()
    train.main()
    expected = trained_bytes(project)
    # A checkpoint of this training, as a killed process would have left it...
    fingerprint = checkpoints.fingerprint()
    model, optimizer, sampler, batches = training(train_table(project), "RMSprop", None)
    losses = fit(model, optimizer, batches, 100, 100, 1e6)
    checkpoints.save(fingerprint, snapshot(model, optimizer, sampler, losses, "no-such-run"))
    # ...then a changed param: the checkpoint is not for these inputs.
    write_params(project, table_params(steps=400, checkpoint_every=100, lr=0.02))
    capsys.readouterr()
    train.main()
    said = capsys.readouterr().out
    assert "not resuming from" in said and "train.lr 0.01 -> 0.02" in said
    assert "training from step 0" in said
    write_params(project, params)
    train.main()  # the params it was made for: the checkpoint is used, and the bytes are right
    assert "resuming from step 100" in capsys.readouterr().out
    assert trained_bytes(project) == expected
