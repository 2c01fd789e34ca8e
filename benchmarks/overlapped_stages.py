"""A measured alternative, not the product: the three stages with their torch work in a forked
worker (compute.torch_process), so that `import torch` and the computation overlap the stage
process's `import mlflow` and the opening of the store (on two cores).

`python benchmarks/overlapped_stages.py STAGE` in a project does what `python -m polyfit STAGE`
does, and writes the same files and MLflow runs; overlap.py times both on fresh clones. The stage
process does not import torch (train does, while its worker trains: the LoggedModel runs the model
on its input example). The worker returns bytes, plain values and the run's machine tags, which
stand in for provenance.machine() (it imports torch). What this costs in code is the point of the
comparison: the product's stages are serial and read top to bottom.
"""

import os
import sys

import compute

from polyfit import files, paths
from polyfit.__main__ import end_process
from polyfit.core.runtime import REPRODUCIBLE_MKL
from polyfit.memory import check_memory
from polyfit.params import Params, flatten, load_params
from polyfit.tracking import model as logged_model
from polyfit.tracking import registry, runs, store


def machine_tags() -> dict[str, str]:
    """Worker: provenance.machine() as plain str (torch.__version__ would unpickle as torch's)."""
    from polyfit.tracking.provenance import machine

    return {key: str(value) for key, value in machine().items()}


def use_machine_tags(tags: dict) -> None:
    """Tag runs with the worker's provenance.machine() instead of importing torch here."""
    runs.machine = lambda: tags


def make_dataset_file(params: Params) -> dict:
    """Worker: the dataset file's bytes and summary, as the generate stage computes them."""
    from polyfit.core.data import make_dataset
    from polyfit.core.runtime import configure_torch

    configure_torch()
    x, y = make_dataset(**params.data.model_dump())
    content = files.tensors_to_bytes({"x": x, "y": y})
    summary = {"y_mean": y.mean().item(), "y_std": y.std().item()}
    return {"content": content, "summary": summary, "machine": machine_tags()}


def generate(params: Params) -> None:
    data = params.data
    with compute.torch_process() as worker:
        making = worker.submit(make_dataset_file, params)  # imports torch, while
        connection = store.connect(params.mlflow.experiment)  # this process imports MLflow
        made = making.result()
    use_machine_tags(made["machine"])
    digests = files.digests(made["content"])
    name = runs.run_name("generate", f"{data.target} n={data.n_samples}")
    logged = flatten({"data": data.model_dump()})
    tags = {"data_sha256": digests.sha256}
    with runs.stage_run("generate", connection, name, logged, tags) as run:
        files.write_atomic(paths.DATASET, made["content"])
        dataset = runs.DvcDataset(str(paths.DATASET), digests.md5, data.n_samples)
        run.log_inputs(dataset, "generated")
        run.log_metrics(made["summary"])
    print(f"wrote {paths.DATASET}: {data.n_samples} points of {data.target}(x)")


def train_model(params: Params) -> dict:
    """Worker: the train stage's computation, from the dataset file to the state_dict's bytes."""
    import time

    from polyfit.core.fit import build_optimizer, fit, make_loss
    from polyfit.core.loss_metrics import train_metrics
    from polyfit.core.model import build_model
    from polyfit.core.runtime import configure_torch
    from polyfit.stages.train import logged_params, print_loss

    train = params.train
    x, y, dataset = files.load_dataset(paths.DATASET, params.data.n_samples)
    configure_torch(train.threads, train.seed)
    model = build_model(params.model.model_dump())
    options = train.optimizer_options()
    optimizer = build_optimizer(train.optimizer, model.parameters(), train.lr, options)
    loss_function = make_loss(train.gradient, model, x, y)
    started = time.perf_counter()
    steps, every, factor = train.steps, train.log_every, train.divergence_factor
    loss_history = fit(loss_function, optimizer, steps, every, factor, report=print_loss)
    seconds = time.perf_counter() - started
    print(f"Result: {model.formula()}", flush=True)
    result = train_metrics(loss_history)
    return {
        "dataset": dataset,
        "model_bytes": files.tensors_to_bytes(model.state_dict()),
        "loss_history": loss_history,
        "result": result,
        "timing": {"train_seconds": seconds, "us_per_step": 1e6 * seconds / result["steps"]},
        "logged": logged_params(params),
        "machine": machine_tags(),
    }


def train(params: Params) -> None:
    with compute.torch_process() as worker:
        training = worker.submit(train_model, params)  # imports torch and trains, while
        connection = store.connect(params.mlflow.experiment)  # this process imports MLflow
        import torch  # noqa: F401  and torch: log_model runs the model on its input example

        trained = training.result()
    use_machine_tags(trained["machine"])
    dataset, history = trained["dataset"], trained["loss_history"]
    name = runs.run_name("train", f"{params.train.optimizer} lr={params.train.lr:g}")
    tags = {"data_sha256": dataset.sha256, "optimizer": params.train.optimizer}
    with runs.stage_run("train", connection, name, trained["logged"], tags) as run:
        tracked = runs.DvcDataset(str(paths.DATASET), dataset.md5, params.data.n_samples)
        run.log_inputs(tracked, "training")
        files.write_atomic(paths.MODEL, trained["model_bytes"])
        files.write_json(paths.TRAIN_METRICS, trained["result"])
        files.write_csv(paths.LOSS_CURVE, {"step": range(len(history)), "loss": history})
        run.log_history("loss", history)
        model_sha256 = files.sha256(trained["model_bytes"])
        run.set_tags({"model_sha256": model_sha256})
        model_tags = {"model_sha256": model_sha256, **runs.experiment_tags()}
        config = params.model.model_dump()
        model_id = logged_model.log_model(run, paths.MODEL, config, trained["logged"], model_tags)
        metrics = trained["result"] | trained["timing"]
        run.log_metrics(metrics, model_id=model_id, dataset=tracked)
        version = registry.register(
            run.client, run.run_id, model_id, params.mlflow.registered_model
        )
        run.set_tags({"registered_version": version, "model_id": model_id})


def score_model(params: Params) -> dict:
    """Worker: the evaluate stage's metrics and fit curve, from the dataset and model files."""
    from polyfit.core.data import evaluation_grid
    from polyfit.core.model import build_model
    from polyfit.core.runtime import configure_torch
    from polyfit.core.scoring import score
    from polyfit.stages.evaluate import fit_curve, sorted_points, used_params

    x, y, dataset = files.load_dataset(paths.DATASET, params.data.n_samples)
    configure_torch(params.train.threads)
    model = build_model(params.model.model_dump())
    model_sha256 = files.load_weights(paths.MODEL, model)
    grid = evaluation_grid(params.data.model_dump(), params.evaluate.grid_points)
    curve_x, curve_y = grid if grid is not None else sorted_points(x, y)
    return {
        "dataset": dataset,
        "model_sha256": model_sha256,
        "metrics": flatten(score(model, x, y, grid=grid)),
        "curve": fit_curve(model, curve_x, curve_y),
        "logged": flatten(used_params(params)),
        "machine": machine_tags(),
    }


def evaluate(params: Params) -> None:
    with compute.torch_process() as worker:
        scoring = worker.submit(score_model, params)  # imports torch and scores, while
        connection = store.connect(params.mlflow.experiment)  # this process imports MLflow
        scored = scoring.result()
    use_machine_tags(scored["machine"])
    dataset, metrics, model_sha256 = scored["dataset"], scored["metrics"], scored["model_sha256"]
    trained = runs.find_trained_model(*connection, model_sha256)
    tags = {"data_sha256": dataset.sha256, "model_sha256": model_sha256}
    if trained is not None:
        tags |= {"mlflow.parentRunId": trained.source_run_id, "model_id": trained.model_id}
    name = runs.run_name("evaluate", f"model {model_sha256[:8]}")
    with runs.stage_run("evaluate", connection, name, scored["logged"], tags) as run:
        files.write_json(paths.EVAL_METRICS, metrics)
        files.write_csv(paths.FIT_CURVE, scored["curve"])
        tracked = runs.DvcDataset(str(paths.DATASET), dataset.md5, params.data.n_samples)
        log_scores(run, trained, tracked, metrics)
    for key, value in metrics.items():
        print(f"{key} {value:.6g}")


def log_scores(run, trained, dataset, metrics: dict) -> None:
    """polyfit.stages.evaluate.log_scores, copied: importing that module imports torch."""
    model_id = trained.model_id if trained is not None else None
    run.log_inputs(dataset, "evaluation", model_id)
    run.log_metrics(metrics, model_id=model_id, dataset=dataset)
    if trained is not None:
        train_run = runs.TrackedRun(run.client, trained.source_run_id, run.experiment_id)
        train_run.log_metrics({f"eval.{key}": value for key, value in metrics.items()})


STAGES = {"generate": generate, "train": train, "evaluate": evaluate}

if __name__ == "__main__":
    stage = sys.argv[1]
    for variable, value in REPRODUCIBLE_MKL.items():  # as `polyfit` sets before torch loads
        os.environ.setdefault(variable, value)
    stage_params = load_params(paths.PARAMS)
    check_memory(stage_params, stage, str(paths.PARAMS))
    STAGES[stage](stage_params)
    end_process(0)  # as `python -m polyfit` ends, so both variants skip the teardown
