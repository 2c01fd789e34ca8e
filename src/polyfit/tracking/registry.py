"""The MLflow model registry: every train run adds a version; `champion` moves only on merit."""

from polyfit.errors import PolyfitError, UsageError

CHAMPION = "champion"
SCORE = "eval.train_set.mse"  # logged on the train run by evaluate; lower is better


def register(client, run_id: str, model_id: str, name: str) -> str:
    """Add the run's LoggedModel as a new version of `name`; return the version."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"models:/{model_id}"
    return client.create_model_version(name, source, run_id=run_id, model_id=model_id).version


def _score(client, version) -> float:
    metrics = client.get_run(version.run_id).data.metrics
    if SCORE not in metrics:
        raise UsageError(
            f"model version {version.version} has no {SCORE}: run `dvc repro` (evaluate) first"
        )
    return metrics[SCORE]


def promote(client, name: str, version: str | None) -> str:
    """Point `champion` at `version` (default: newest) if it beats the current champion."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as error:
        raise UsageError(f"registered model {name!r}: {error.message}") from None
    if not versions:
        raise UsageError(f"registered model {name!r} has no versions: run `dvc repro` first")
    by_number = {str(v.version): v for v in versions}
    chosen = by_number.get(version) if version else max(versions, key=lambda v: int(v.version))
    if chosen is None:
        raise UsageError(f"registered model {name!r} has no version {version}")
    if not chosen.source.startswith("models:/"):  # a run folder: before train logged models
        raise UsageError(
            f"version {chosen.version} of {name!r} is not an MLflow model (source {chosen.source} "
            "predates logged models): it cannot load or serve; train again to register one"
        )
    candidate = _score(client, chosen)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    if champion is not None:
        incumbent = _score(client, champion)
        if not candidate < incumbent:
            raise PolyfitError(
                f"version {chosen.version} ({SCORE}={candidate:.6g}) does not beat champion "
                f"version {champion.version} ({incumbent:.6g}); alias unchanged"
            )
    client.set_registered_model_alias(name, CHAMPION, chosen.version)
    return f"{name} version {chosen.version} is now {CHAMPION} ({SCORE}={candidate:.6g})"


def main(args) -> None:
    """`polyfit promote [--version N]`."""
    from polyfit import paths
    from polyfit.params import load_params
    from polyfit.tracking import store

    params = load_params(paths.PARAMS)
    client = store.make_client(store.tracking_uri())
    print(promote(client, params.mlflow.registered_model, args.version))
