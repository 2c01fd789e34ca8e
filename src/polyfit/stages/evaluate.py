"""Stage evaluate: score models/model.pt on the rows it trained on and on the held-out rows ->
metrics/eval.json and plots/fit.csv.

Its MLflow run is nested under the train run that logged the model (found by the model file's
sha256), and its scores are copied to that train run as eval.*, linked to the LoggedModel and
the held-out data, so the UI's table of train runs, the model's page and `polyfit promote` see
every model with its scores.
"""

from polyfit import files, paths
from polyfit.core.data import Table
from polyfit.core.model import build_model
from polyfit.core.runtime import configure_torch
from polyfit.core.scoring import predict, score
from polyfit.params import Params, flatten, load_params
from polyfit.tracking import runs, scores, store

FIT_CURVE_POINTS = 500  # enough to draw the curve; the metrics use every row


def main() -> None:
    params = load_params(paths.PARAMS)
    train, train_data = files.load_table(paths.TRAIN_DATA)
    held_out, held_out_data = files.load_table(paths.HELD_OUT_DATA)
    configure_torch(params.train.threads)
    model = build_model(params.model.model_dump(), len(train.features))
    model_sha256 = files.load_weights(paths.MODEL, model)
    metrics = flatten(score(model, train, held_out))
    curve = fit_curve(model, held_out)

    connection = store.connect(params.mlflow.experiment)
    trained = scores.find_trained_model(*connection, model_sha256)
    tags = {
        "data_md5": train_data.md5,
        "held_out_path": str(paths.HELD_OUT_DATA),
        "held_out_md5": held_out_data.md5,
        "model_sha256": model_sha256,
    }
    if trained is not None:
        tags |= {"mlflow.parentRunId": trained.source_run_id, "model_id": trained.model_id}
    name = runs.run_name("evaluate", f"model {model_sha256[:8]}")
    logged = flatten(used_params(params))
    with runs.stage_run("evaluate", connection, name, logged, tags) as (run, _):
        files.write_json(paths.EVAL_METRICS, metrics)
        files.write_csv(paths.FIT_CURVE, curve)
        scored = runs.DvcDataset(str(paths.HELD_OUT_DATA), held_out_data.md5, len(held_out.y))
        run.log_inputs(scored, "evaluation", trained.model_id if trained else None)
        run.log_metrics(metrics)
        if trained is None:
            print("note: no LoggedModel in MLflow holds this model file; scores logged here only")
        else:
            train_run = runs.TrackedRun(run.client, trained.source_run_id, run.experiment_id)
            scores.log_scores(train_run, trained.model_id, scored, metrics)
    for key, value in metrics.items():
        print(f"{key} {value:.6g}")


def fit_curve(model, table: Table) -> dict:
    """The held-out rows in increasing first feature (every k-th, up to ~FIT_CURVE_POINTS): the
    features, the target and the prediction. For one feature, the curve the model draws; for
    any number, prediction against target."""
    order = table.X[:, 0].argsort(stable=True)
    rows = order[:: max(1, len(order) // FIT_CURVE_POINTS)]
    X = table.X[rows]
    columns = {name: X[:, i].tolist() for i, name in enumerate(table.features)}
    return columns | {"target": table.y[rows].tolist(), "prediction": predict(model, X).tolist()}


def used_params(params: Params) -> dict:
    """The params dvc.yaml lists for this stage."""
    return {"model": params.model.model_dump(), "train": {"threads": params.train.threads}}
