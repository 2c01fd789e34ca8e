"""Stage train: data/dataset.pt -> models/model.pt + metrics/train.json, tracked in MLflow.

The torch work runs in a second process (compute.py): it checks the inputs and trains while this
one imports MLflow and matplotlib. The functions it runs take params and return plain values.
"""

import time

from polyfit import compute, files, logged_model, paths, plots, registry, tracking
from polyfit.loss_metrics import train_metrics
from polyfit.params import Params, flatten, load_params


def check_inputs(params: Params) -> files.Digests:
    """The dataset's digests, once it loads and the optimizer accepts its options."""
    from polyfit.fit import build_optimizer
    from polyfit.model import build_model

    _, _, dataset = files.load_dataset(paths.DATASET, params.data.n_samples)
    model = build_model(params.model.degree)  # imports torch._dynamo (~1 s) beside MLflow's import
    train = params.train
    build_optimizer(train.optimizer, model.parameters(), train.lr, train.optimizer_options())
    return dataset


def train_model(params: Params) -> dict:
    """The seed's training on the dataset: the state_dict's bytes, the loss history, the time."""
    from polyfit.fit import build_optimizer, fit, make_loss
    from polyfit.model import build_model, coefficients, formula
    from polyfit.runtime import configure_torch

    train, degree = params.train, params.model.degree
    x, y, _ = files.load_dataset(paths.DATASET, params.data.n_samples)
    configure_torch(train.threads, train.seed)
    model = build_model(degree)
    optimizer = build_optimizer(
        train.optimizer, model.parameters(), train.lr, train.optimizer_options()
    )
    started = time.perf_counter()
    loss_function = make_loss(train.gradient, model, x, y, degree)  # gram's one pass is timed
    report = lambda step, loss: print(step, loss, flush=True)  # noqa: E731
    loss_history = fit(
        loss_function, optimizer, train.steps, train.log_every, train.divergence_factor, report
    )
    seconds = time.perf_counter() - started
    print(f"Result: {formula(coefficients(model))}", flush=True)
    return {
        "model_bytes": files.tensors_to_bytes(model.state_dict()),
        "loss_history": loss_history,
        "seconds": seconds,
    }


def main() -> None:
    started = time.time()  # the run opens after training began; it starts here
    params = load_params(paths.PARAMS)
    train = params.train
    with compute.torch_process() as torch_side:
        inputs = torch_side.submit(check_inputs, params)  # imports torch ...
        tracking.probe_store()  # (a dead tracking server fails the stage before it trains)
        training = torch_side.submit(train_model, params)  # ... and trains, while
        tracking.preload()  # this process imports MLflow
        logged_model.preload()  # and what saving the model needs
        plots.preload()  # and matplotlib, for the loss picture
        dataset_digests = inputs.result()  # bad inputs fail here, before any MLflow run
        name = tracking.run_name("train", f"{train.optimizer} lr={train.lr:g}")
        tags = {"data_sha256": dataset_digests.sha256, "optimizer": train.optimizer}
        logged = logged_params(params)
        connection = tracking.connect(params.mlflow.experiment)
        with tracking.stage_run("train", connection, name, logged, tags, started) as run:
            dataset = tracking.DvcDataset(
                str(paths.DATASET), dataset_digests.md5, params.data.n_samples
            )
            run.log_inputs(dataset, "training")
            trained = training.result()
            loss_history, model_bytes = trained["loss_history"], trained["model_bytes"]
            result = train_metrics(loss_history)  # final_loss, steps, tail_mean_loss
            files.write_atomic(paths.MODEL, model_bytes)
            files.write_json(paths.TRAIN_METRICS, result)
            steps = range(len(loss_history))
            files.write_csv(paths.LOSS_CURVE, {"step": steps, "loss": loss_history})
            log_to_mlflow(run, params, logged, trained, result, dataset)


def logged_params(params: Params) -> dict:
    """What the train run shows as params: data, model, train and the chosen optimizer's options."""
    train = params.train.model_dump(exclude={"options"})
    options = {params.train.optimizer: params.train.optimizer_options()}
    return flatten(
        {"data": params.data.model_dump(), "model": params.model.model_dump(), "train": train}
    ) | flatten({"train": {"options": options}})


def log_to_mlflow(run, params: Params, logged: dict, trained: dict, result: dict, dataset) -> None:
    """Mirror the outputs into MLflow: the loss curve, the LoggedModel (with the run's params),
    a registry version."""
    run.log_history("loss", trained["loss_history"])
    model_sha256 = files.sha256(trained["model_bytes"])
    run.set_tags({"model_sha256": model_sha256})
    model_tags = {"model_sha256": model_sha256, **tracking.experiment_tags()}
    model_id = logged_model.log_model(run, paths.MODEL, logged, model_tags)
    seconds = trained["seconds"]
    timing = {"train_seconds": seconds, "us_per_step": 1e6 * seconds / result["steps"]}
    run.log_metrics(result | timing, model_id=model_id, dataset=dataset)
    run.log_bytes("loss.png", plots.loss_png(trained["loss_history"]), "plots")
    version = registry.register(run.client, run.run_id, model_id, params.mlflow.registered_model)
    run.set_tags({"registered_version": version, "model_id": model_id})
