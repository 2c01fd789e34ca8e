"""Stage train: data/dataset.pt -> models/model.pt + metrics/train.json, tracked in MLflow."""

import time

from polyfit import background, files, paths, tracking
from polyfit.params import Params, flatten, load_params


def logged_params(params) -> dict:
    """What the train run shows as params: data, model, train and the chosen optimizer's options."""
    train = params.train.model_dump(exclude={"options"})
    options = {params.train.optimizer: params.train.optimizer_options()}
    return flatten(
        {"data": params.data.model_dump(), "model": params.model.model_dump(), "train": train}
    ) | flatten({"train": {"options": options}})


def compute(params: Params):
    """In the compute child: yield the dataset's sha256 once the data and optimizer are ready,
    then, asked again once the parent's MLflow run has started, train and yield the model."""
    from polyfit import plots
    from polyfit.fit import build_optimizer, fit, make_objective
    from polyfit.model import build_model, coefficients, formula
    from polyfit.runtime import configure_torch

    train, degree = params.train, params.model.degree
    x, y, data_sha256 = files.load_dataset(paths.DATASET, params.data.n_samples)
    configure_torch(train.threads, train.seed)
    model = build_model(degree)
    optimizer = build_optimizer(  # imports torch._dynamo: ~1 s, beside the parent's MLflow
        train.optimizer, model.parameters(), train.lr, train.optimizer_options()
    )
    yield data_sha256  # the input is valid: the parent may start the MLflow run
    started = time.perf_counter()
    loss_history = fit(
        make_objective(train.gradient, model, x, y, degree),  # gram's one pass is timed too
        optimizer,
        train.steps,
        train.log_every,
        train.divergence_factor,
        report=lambda step, loss: print(step, loss, flush=True),
    )
    seconds = time.perf_counter() - started
    print(f"Result: {formula(coefficients(model))}", flush=True)
    history = loss_history.tolist()
    yield {
        "model_bytes": files.tensors_to_bytes(model.state_dict()),
        "loss_history": history,
        "seconds": seconds,
        "loss_png": plots.loss_png(history),
    }


def main() -> None:
    params = load_params(paths.PARAMS)
    train = params.train
    with background.child(compute, params) as trained:  # imports torch while we import mlflow
        tracking.preload()
        data_sha256 = trained.next()
        name = tracking.run_name("train", f"{train.optimizer} lr={train.lr:g}")
        tags = {"data_sha256": data_sha256, "optimizer": train.optimizer}
        with tracking.stage_run(
            "train", params.mlflow.experiment, name, logged_params(params), tags
        ) as run:
            save_and_log(run, params, trained.next())


def save_and_log(run, params: Params, trained: dict) -> None:
    """Write the DVC outputs, then mirror them into the MLflow run and the registry."""
    from polyfit import registry

    loss_history, model_bytes = trained["loss_history"], trained["model_bytes"]
    result = {"final_loss": loss_history[-1], "steps": len(loss_history)}
    run.log_history("loss", loss_history)
    us_per_step = 1e6 * trained["seconds"] / len(loss_history)
    run.log_metrics(result | {"train_seconds": trained["seconds"], "us_per_step": us_per_step})
    files.write_atomic(paths.MODEL, model_bytes)
    files.write_json(paths.TRAIN_METRICS, result)
    files.write_csv(paths.LOSS_CURVE, {"step": range(len(loss_history)), "loss": loss_history})
    run.set_tags({"model_sha256": files.sha256(model_bytes)})
    run.log_file(paths.MODEL, "model")
    run.log_bytes("loss.png", trained["loss_png"], "plots")
    version = registry.register(run.client, run.run_id, params.mlflow.registered_model)
    run.set_tags({"registered_version": version})
