"""Stage evaluate: score models/model.pt on the dataset and, when the data has a known target
function, on a dense grid of it -> metrics/eval.json and plots/fit.csv.

Its MLflow run is nested under the train run that logged the model (found by the model file's
sha256), and its metrics are linked to that LoggedModel and copied to the train run as `eval.*`,
so the UI's table of train runs and its Models tab show every model with its scores.
"""

from polyfit import files, paths
from polyfit.core.data import evaluation_grid
from polyfit.core.model import build_model, predict
from polyfit.core.runtime import configure_torch
from polyfit.core.scoring import score
from polyfit.params import Params, flatten, load_params
from polyfit.tracking import runs, store

FIT_CURVE_POINTS = 500  # enough to draw the curve; the metrics use the whole grid


def main() -> None:
    params = load_params(paths.PARAMS)
    data = params.data
    x, y, dataset = files.load_dataset(paths.DATASET, data.n_samples)
    configure_torch(params.train.threads)
    model = build_model(params.model.model_dump())
    model_sha256 = files.load_weights(paths.MODEL, model)
    grid = evaluation_grid(data.model_dump(), params.evaluate.grid_points)
    metrics = flatten(score(model, x, y, grid=grid))
    curve_x, curve_y = grid if grid is not None else sorted_points(x, y)
    curve = fit_curve(model, curve_x, curve_y)

    connection = store.connect(params.mlflow.experiment)
    trained = runs.find_trained_model(*connection, model_sha256)
    tags = {"data_sha256": dataset.sha256, "model_sha256": model_sha256}
    if trained is not None:
        tags |= {"mlflow.parentRunId": trained.source_run_id, "model_id": trained.model_id}
    name = runs.run_name("evaluate", f"model {model_sha256[:8]}")
    with runs.stage_run("evaluate", connection, name, flatten(used_params(params)), tags) as run:
        files.write_json(paths.EVAL_METRICS, metrics)
        files.write_csv(paths.FIT_CURVE, curve)
        tracked = runs.DvcDataset(str(paths.DATASET), dataset.md5, data.n_samples)
        log_scores(run, trained, tracked, metrics)
    for key, value in metrics.items():
        print(f"{key} {value:.6g}")


def sorted_points(x, y) -> tuple:
    """The data in increasing x: the curve to draw when there is no grid."""
    order = x.argsort(stable=True)
    return x[order], y[order]


def fit_curve(model, curve_x, curve_y) -> dict:
    """Target and prediction at up to ~FIT_CURVE_POINTS of the (sorted) points."""
    every = max(1, len(curve_x) // FIT_CURVE_POINTS)
    return {
        "x": curve_x[::every].tolist(),
        "target": curve_y[::every].tolist(),
        "prediction": predict(model, curve_x[::every]).tolist(),
    }


def used_params(params: Params) -> dict:
    """The params dvc.yaml lists for this stage."""
    return {
        "data": params.data.model_dump(include={"target", "x_min", "x_max", "n_samples"}),
        "model": params.model.model_dump(),
        "train": {"threads": params.train.threads},
        "evaluate": params.evaluate.model_dump(),
    }


def log_scores(run, trained, dataset, metrics: dict) -> None:
    """Log to this run, linked to the model, and as eval.* to the train run that made it."""
    model_id = trained.model_id if trained is not None else None
    run.log_inputs(dataset, "evaluation", model_id)
    run.log_metrics(metrics, model_id=model_id, dataset=dataset)
    if trained is None:
        print("note: no LoggedModel in MLflow holds this model file; scores logged here only")
        return
    train_run = runs.TrackedRun(run.client, trained.source_run_id, run.experiment_id)
    train_run.log_metrics({f"eval.{key}": value for key, value in metrics.items()})
