"""Stage train: data/dataset.pt -> models/model.pt, metrics/train.json and plots/loss.csv, tracked
as one MLflow run: params, the loss history, the LoggedModel and a new registry version."""

import time

from polyfit import files, paths
from polyfit.core.fit import build_optimizer, fit, make_loss
from polyfit.core.loss_metrics import train_metrics
from polyfit.core.model import Polynomial, build_model
from polyfit.core.runtime import configure_torch
from polyfit.params import Params, flatten, load_params
from polyfit.tracking import model as logged_model
from polyfit.tracking import registry, runs, store


def main() -> None:
    params = load_params(paths.PARAMS)
    train = params.train
    x, y, dataset = files.load_dataset(paths.DATASET, params.data.n_samples)
    configure_torch(train.threads, train.seed)
    model = build_model(params.model.model_dump())
    options = train.optimizer_options()
    optimizer = build_optimizer(train.optimizer, model.parameters(), train.lr, options)
    loss_function = make_loss(train.gradient, model, x, y)
    connection = store.connect(params.mlflow.experiment)  # a dead server fails before training

    name = runs.run_name("train", f"{train.optimizer} lr={train.lr:g}")
    tags = {"data_sha256": dataset.sha256, "optimizer": train.optimizer}
    logged = logged_params(params)
    with runs.stage_run("train", connection, name, logged, tags) as run:
        tracked = runs.DvcDataset(str(paths.DATASET), dataset.md5, params.data.n_samples)
        run.log_inputs(tracked, "training")
        started = time.perf_counter()
        loss_history = fit(
            loss_function,
            optimizer,
            train.steps,
            train.log_every,
            train.divergence_factor,
            report=print_loss,
        )
        seconds = time.perf_counter() - started
        if isinstance(model, Polynomial):
            print(f"Result: {model.formula()}", flush=True)

        result = train_metrics(loss_history)  # final_loss, steps, tail_mean_loss
        model_bytes = files.tensors_to_bytes(model.state_dict())
        files.write_atomic(paths.MODEL, model_bytes)
        files.write_json(paths.TRAIN_METRICS, result)
        files.write_csv(paths.LOSS_CURVE, {"step": range(len(loss_history)), "loss": loss_history})

        run.log_history("loss", loss_history)
        model_sha256 = files.sha256(model_bytes)
        run.set_tags({"model_sha256": model_sha256})
        model_tags = {"model_sha256": model_sha256, **runs.experiment_tags()}
        model_config = params.model.model_dump()
        model_id = logged_model.log_model(run, paths.MODEL, model_config, logged, model_tags)
        timing = {"train_seconds": seconds, "us_per_step": 1e6 * seconds / result["steps"]}
        run.log_metrics(result | timing, model_id=model_id, dataset=tracked)
        version = registry.register(
            run.client, run.run_id, model_id, params.mlflow.registered_model
        )
        run.set_tags({"registered_version": version, "model_id": model_id})


def logged_params(params: Params) -> dict:
    """What the train run shows as params: data, model, train and the chosen optimizer's options."""
    train = params.train.model_dump(exclude={"options"})
    options = {params.train.optimizer: params.train.optimizer_options()}
    return flatten(
        {"data": params.data.model_dump(), "model": params.model.model_dump(), "train": train}
    ) | flatten({"train": {"options": options}})


def print_loss(step: int, loss: float) -> None:
    print(step, loss, flush=True)
