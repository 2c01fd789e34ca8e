"""Stage evaluate: score models/model.pt against the least-squares optimum -> metrics/eval.json.

Its MLflow run is nested under the train run that logged the model (found by the model file's
sha256), and its metrics are linked to that LoggedModel and copied to the train run as `eval.*`,
so the UI's table of train runs and its Models tab show every model with its scores.
"""

from polyfit import compute, files, paths, tracking
from polyfit.params import Params, flatten, load_params

FIT_CURVE_POINTS = 500  # enough to draw the curve; the metrics use the whole grid


def score_model(params: Params) -> dict:
    """The scores, the fit curve and its picture, and the inputs' digests."""
    import torch

    from polyfit import plots
    from polyfit.data import TARGET_FUNCTIONS
    from polyfit.model import build_model, predict
    from polyfit.runtime import configure_torch
    from polyfit.scoring import score

    data, degree = params.data, params.model.degree
    x, y, dataset = files.load_dataset(paths.DATASET, data.n_samples)
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
    return {
        "dataset": dataset,
        "model_sha256": model_sha256,
        "metrics": flatten(score(model, x, y, grid_x, grid_y, degree)),
        "curve": curve,
        "fit_png": plots.fit_png(curve["x"], curve["target"], curve["prediction"]),
    }


def main() -> None:
    params = load_params(paths.PARAMS)
    with compute.torch_process() as torch_side:
        scoring = torch_side.submit(score_model, params)  # imports torch ...
        tracking.preload()  # ... while this process imports MLflow
        scored = scoring.result()  # bad inputs fail here, before any MLflow run
    metrics, model_sha256 = scored["metrics"], scored["model_sha256"]
    connection = tracking.connect(params.mlflow.experiment)
    trained = tracking.find_trained_model(*connection, model_sha256)
    tags = {"data_sha256": scored["dataset"].sha256, "model_sha256": model_sha256}
    if trained is not None:
        tags |= {"mlflow.parentRunId": trained.source_run_id, "model_id": trained.model_id}
    name = tracking.run_name("evaluate", f"model {model_sha256[:8]}")
    used = flatten(used_params(params))
    with tracking.stage_run("evaluate", connection, name, used, tags) as run:
        files.write_json(paths.EVAL_METRICS, metrics)
        files.write_csv(paths.FIT_CURVE, scored["curve"])
        dataset = tracking.DvcDataset(
            str(paths.DATASET), scored["dataset"].md5, params.data.n_samples
        )
        log_scores(run, trained, dataset, metrics, scored["fit_png"])
    for key, value in metrics.items():
        print(f"{key} {value:.6g}")


def used_params(params: Params) -> dict:
    """The params dvc.yaml lists for this stage."""
    return {
        "data": params.data.model_dump(include={"target", "x_min", "x_max", "n_samples"}),
        "model": params.model.model_dump(),
        "train": {"threads": params.train.threads},
        "evaluate": params.evaluate.model_dump(),
    }


def log_scores(run, trained, dataset, metrics: dict, picture: bytes) -> None:
    """Log to this run, linked to the model, and as eval.* to the train run that made it."""
    model_id = trained.model_id if trained is not None else None
    run.log_inputs(dataset, "evaluation", model_id)
    run.log_metrics(metrics, model_id=model_id, dataset=dataset)
    run.log_bytes("fit.png", picture, "plots")
    if trained is None:
        print("note: no LoggedModel in MLflow holds this model file; scores logged here only")
        return
    train_run = tracking.TrackedRun(run.client, trained.source_run_id, run.experiment_id)
    train_run.log_metrics({f"eval.{key}": value for key, value in metrics.items()})
    train_run.log_bytes("fit.png", picture, "plots")
