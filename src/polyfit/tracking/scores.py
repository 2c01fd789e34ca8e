"""A model's evaluation in MLflow: the train run and LoggedModel of a model file, and the scores
evaluate copies onto them (and that a retrained model with the same bytes reuses)."""

import os

from polyfit.tracking.runs import DvcDataset, TrackedRun


def find_trained_model(client, experiment_id: str, model_sha256: str):
    """The newest LoggedModel of this exact model file (same DVC experiment first), or None."""
    base = f"tags.model_sha256 = '{model_sha256}'"
    filters = [base]
    if experiment := os.environ.get("DVC_EXP_NAME"):
        filters.insert(0, f"{base} AND tags.dvc_exp = '{experiment}'")
    for filter_string in filters:
        models = client.search_logged_models(
            [experiment_id],
            filter_string=filter_string,
            order_by=[{"field_name": "creation_timestamp", "ascending": False}],
            max_results=1,
        )
        if models:
            return models[0]
    return None


def log_scores(run: TrackedRun, model_id: str, held_out: DvcDataset, metrics: dict) -> None:
    """evaluate's metrics as eval.* on the train run that made the model, linked to its
    LoggedModel and the held-out data: the UI's table of train runs, the model's page and
    `polyfit promote` read them there."""
    scores = {f"eval.{key}": value for key, value in metrics.items()}
    run.log_metrics(scores, model_id=model_id, dataset=held_out)


def reuse_scores(run: TrackedRun, model_id: str, model_sha256: str, data_md5: str) -> None:
    """Give a retrained model whose exact bytes were scored before (on this training data) those
    scores: DVC does not run evaluate again for a model file it has seen."""
    found = run.client.search_runs(
        [run.experiment_id],
        f"tags.stage = 'evaluate' AND tags.model_sha256 = '{model_sha256}' "
        f"AND tags.data_md5 = '{data_md5}' AND attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if found:
        tags = found[0].data.tags
        held_out = DvcDataset(tags["held_out_path"], tags["held_out_md5"], 0)
        log_scores(run, model_id, held_out, found[0].data.metrics)
