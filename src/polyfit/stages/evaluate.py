"""Stage evaluate: score models/model.pt against the least-squares optimum -> metrics/eval.json.

The metrics go to this stage's run and to the train run that wrote the model (found by the
model file's sha256), which is the run users compare in the MLflow UI.
"""

from polyfit import background, files, paths, tracking
from polyfit.params import Params, flatten, load_params

FIT_CURVE_POINTS = 500  # enough to draw the curve; the metrics use the whole grid


def compute(params: Params):
    """In the compute child: the scores, the fit curve and its picture, and the inputs' sha256s.

    One value: scoring takes a fraction of a second, so it runs before the parent's MLflow run
    starts, and a bad input file fails the stage before any run exists.
    """
    import torch

    from polyfit import plots
    from polyfit.data import TARGET_FUNCTIONS
    from polyfit.model import build_model, predict
    from polyfit.runtime import configure_torch
    from polyfit.scoring import score

    data, degree = params.data, params.model.degree
    x, y, data_sha256 = files.load_dataset(paths.DATASET, data.n_samples)
    state_dict, model_sha256 = files.load_state_dict(paths.MODEL, degree)
    configure_torch(params.train.threads)
    model = build_model(degree)
    model.load_state_dict(state_dict)
    grid_x = torch.linspace(data.x_min, data.x_max, params.evaluate.grid_points)
    grid_y = TARGET_FUNCTIONS[data.target](grid_x.double())  # noise-free truth, (G,)
    every = max(1, len(grid_x) // FIT_CURVE_POINTS)
    curve = {
        "x": grid_x[::every].tolist(),
        "target": grid_y[::every].tolist(),
        "prediction": predict(model, grid_x[::every], degree).tolist(),
    }
    yield {
        "data_sha256": data_sha256,
        "model_sha256": model_sha256,
        "metrics": flatten(score(model, x, y, grid_x, grid_y, degree)),
        "curve": curve,
        "fit_png": plots.fit_png(curve["x"], curve["target"], curve["prediction"]),
    }


def main() -> None:
    params = load_params(paths.PARAMS)
    data = params.data
    used = {  # the params dvc.yaml lists for this stage
        "data": data.model_dump(include={"target", "x_min", "x_max", "n_samples"}),
        "model": params.model.model_dump(),
        "train": {"threads": params.train.threads},
        "evaluate": params.evaluate.model_dump(),
    }
    with background.child(compute, params) as scored:  # imports torch while we import mlflow
        tracking.preload()
        result = scored.next()
    model_sha256 = result["model_sha256"]
    tags = {"data_sha256": result["data_sha256"], "model_sha256": model_sha256}
    name = tracking.run_name("evaluate", f"model {model_sha256[:8]}")
    with tracking.stage_run("evaluate", params.mlflow.experiment, name, flatten(used), tags) as run:
        files.write_json(paths.EVAL_METRICS, result["metrics"])
        files.write_csv(paths.FIT_CURVE, result["curve"])
        log_to_runs(run, model_sha256, result["metrics"], result["fit_png"])
    for key, value in result["metrics"].items():
        print(f"{key} {value:.6g}")


def log_to_runs(run, model_sha256: str, metrics: dict, picture: bytes) -> None:
    """Log to this run and to the train run that produced the model."""
    run.log_metrics(metrics)
    run.log_bytes("fit.png", picture, "plots")
    train_run_id = tracking.find_train_run(run.client, run.experiment_id, model_sha256)
    if train_run_id is None:
        print(f"note: no finished train run in MLflow wrote model {model_sha256[:12]}")
        return
    train_run = tracking.TrackedRun(run.client, train_run_id, run.experiment_id)
    train_run.log_metrics({f"eval.{key}": value for key, value in metrics.items()})
    train_run.log_bytes("fit.png", picture, "plots")
    run.set_tags({"train_run_id": train_run_id})
