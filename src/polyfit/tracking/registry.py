"""The MLflow model registry: every train run adds a version. The first version becomes
`champion`, so a fresh clone serves after one `dvc repro`; after that the alias moves only on
merit, by command."""

from polyfit.errors import PolyfitError, UsageError

CHAMPION = "champion"
SCORE = "eval.train_set.mse"  # logged on the train run by evaluate; lower is better


def register(client, run_id: str, model_id: str, name: str) -> str:
    """Add the run's LoggedModel as a new version of `name`, champion if there is none yet;
    return the version."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"models:/{model_id}"
    version = client.create_model_version(name, source, run_id=run_id, model_id=model_id).version
    if CHAMPION not in client.get_registered_model(name).aliases:
        client.set_registered_model_alias(name, CHAMPION, version)
    return version


def score(client, version) -> float | None:
    """The version's SCORE, None before evaluate has scored its train run."""
    return client.get_run(version.run_id).data.metrics.get(SCORE)


def _require_score(client, version) -> float:
    value = score(client, version)
    if value is None:
        raise UsageError(
            f"model version {version.version} has no {SCORE}: run `dvc repro` (evaluate) first"
        )
    return value


def best(client, versions: list) -> tuple:
    """(score, version, how many were scored) for the lowest SCORE; the older version on a tie.
    Versions evaluate has not scored are skipped."""
    scored = [
        (value, int(version.version), version)
        for version in versions
        if (value := score(client, version)) is not None
    ]
    if not scored:
        raise UsageError(f"no model version has {SCORE} yet: run `dvc repro` (evaluate) first")
    value, _, version = min(scored, key=lambda item: item[:2])
    return value, version, len(scored)


def _versions(client, name: str) -> list:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as error:
        raise UsageError(f"registered model {name!r}: {error.message}") from None
    if not versions:
        raise UsageError(f"registered model {name!r} has no versions: run `dvc repro` first")
    return versions


def _champion(client, name: str):
    """The version `champion` points at, or None."""
    aliases = client.get_registered_model(name).aliases
    return client.get_model_version(name, aliases[CHAMPION]) if CHAMPION in aliases else None


def promote(client, name: str, version: str | None) -> str:
    """Point `champion` at `version` if it beats the current champion; without a version, at
    the best scored version. Returns what was done and why."""
    versions = _versions(client, name)
    if version is None:
        candidate, chosen, count = best(client, versions)
        why = f"{SCORE} {candidate:.6g}, the lowest of {count} scored version(s)"
    else:
        chosen = {str(v.version): v for v in versions}.get(str(version))
        if chosen is None:
            raise UsageError(f"registered model {name!r} has no version {version}")
        candidate = _require_score(client, chosen)
        why = f"{SCORE} {candidate:.6g}"
    champion = _champion(client, name)
    incumbent = score(client, champion) if champion is not None else None
    if incumbent is not None and not candidate < incumbent:
        if version is None:  # the champion already has the best score
            return f"{name} version {champion.version} stays {CHAMPION}: {why}"
        raise PolyfitError(
            f"version {chosen.version} ({SCORE}={candidate:.6g}) does not beat champion "
            f"version {champion.version} ({incumbent:.6g}); alias unchanged"
        )
    client.set_registered_model_alias(name, CHAMPION, chosen.version)
    return f"{name} version {chosen.version} is now {CHAMPION}: {why} ({_was(champion, incumbent)})"


def _was(champion, incumbent: float | None) -> str:
    """What the replaced champion scored, for promote's message."""
    if champion is None:
        return "there was no champion"
    had = f"{incumbent:.6g}" if incumbent is not None else f"no {SCORE}"
    return f"champion version {champion.version} had {had}"


def main(args) -> None:
    """`polyfit promote [--version N]`."""
    from polyfit import paths
    from polyfit.params import load_params
    from polyfit.tracking import store

    params = load_params(paths.PARAMS)
    client = store.make_client(store.tracking_uri())
    print(promote(client, params.mlflow.registered_model, args.version))
