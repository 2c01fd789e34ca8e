"""The MLflow model registry holds the models worth serving: a version is added only when a model
is promoted (`polyfit promote`), or for the first model of a fresh project, so that `make serve`
works right after `make run`. The alias `champion` points at the version to serve.

Models are compared by their held-out score, and only with models trained on the same training
data and scored on the same held-out data (both files' md5, as dvc.lock records them).
"""

from typing import NamedTuple

from mlflow.exceptions import MlflowException

from polyfit import files, paths
from polyfit.errors import PolyfitError, UsageError
from polyfit.tracking.names import CHAMPION, SCORE

TRAIN_DATA_TAG = "data_md5"  # the LoggedModel's training data


class Candidate(NamedTuple):
    model_id: str
    score: float
    source_run_id: str


def register_first(client, name: str, model_id: str, run_id: str) -> str | None:
    """Register the model as version 1 and champion when `name` has no version yet; the
    version, or None when the registry already had one."""
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return None  # another training got there first (promote covers one that then died)
    return _register(client, name, model_id, run_id)


def _register(client, name: str, model_id: str, run_id: str) -> str:
    """The model's version of `name` (a new one unless it has one), now the champion."""
    versions = client.search_model_versions(f"name = '{name}'")
    known = [version.version for version in versions if _model_id(version) == model_id]
    source = f"models:/{model_id}"
    version = (
        known[0]
        if known
        else client.create_model_version(name, source, run_id=run_id, model_id=model_id).version
    )
    client.set_registered_model_alias(name, CHAMPION, version)
    return version


def comparable(client, experiment_id: str, train_md5: str, held_out_md5: str):
    """(every LoggedModel trained on this training data with a score on this held-out data,
    best first, the older one on a tie; how many scored models were left out for other data)."""
    found, skipped, token = [], 0, None
    while True:
        page = client.search_logged_models(
            [experiment_id],
            order_by=[{"field_name": "creation_timestamp", "ascending": True}],
            page_token=token,
        )
        for logged in page:
            scores = [metric for metric in logged.metrics or [] if metric.key == SCORE]
            same_data = logged.tags.get(TRAIN_DATA_TAG) == train_md5
            on_held_out = [m.value for m in scores if m.dataset_digest == held_out_md5]
            if same_data and on_held_out:
                found.append(Candidate(logged.model_id, on_held_out[-1], logged.source_run_id))
            elif scores:
                skipped += 1
        token = page.token
        if not token:
            return sorted(found, key=lambda candidate: candidate.score), skipped


def _champion(client, name: str):
    """The version `champion` points at, or None."""
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException:
        return None
    return client.get_model_version(name, aliases[CHAMPION]) if CHAMPION in aliases else None


def promote(client, experiment_id: str, name: str, model_id: str | None = None) -> str:
    """Point `champion` at the best comparable model (or at `model_id`) if it beats the
    champion, registering it as a new version; say what was done and why."""
    train_md5 = files.digests(files.read_bytes(paths.TRAIN_DATA)).md5
    held_out_md5 = files.digests(files.read_bytes(paths.HELD_OUT_DATA)).md5
    candidates, skipped = comparable(client, experiment_id, train_md5, held_out_md5)
    if not candidates:
        raise UsageError(
            f"no model trained on {paths.TRAIN_DATA} as it is now has a {SCORE} on "
            f"{paths.HELD_OUT_DATA}: run `dvc repro` first"
        )
    scores = {candidate.model_id: candidate for candidate in candidates}
    chosen = scores.get(model_id) if model_id else candidates[0]
    if chosen is None:
        raise UsageError(f"model {model_id} was not trained and scored on the current data")
    why = f"{SCORE} {chosen.score:.6g}"
    if model_id is None:
        why += f", the best of {len(candidates)} model(s) trained and scored on the current data"
    if skipped:
        why += f"; {skipped} scored on other data not compared"
    champion = _champion(client, name)
    champion_model = _model_id(champion) if champion is not None else None
    incumbent = scores.get(champion_model)
    if champion_model == chosen.model_id:
        return f"{name} version {champion.version} stays {CHAMPION}: {why}"
    if incumbent is not None and not chosen.score < incumbent.score:
        if model_id is None:
            return f"{name} version {champion.version} stays {CHAMPION}: {why}"
        raise PolyfitError(
            f"model {chosen.model_id} ({SCORE} {chosen.score:.6g}) does not beat champion "
            f"version {champion.version} ({incumbent.score:.6g}); alias unchanged"
        )
    version = _register(client, name, chosen.model_id, chosen.source_run_id)
    return f"{name} version {version} is now {CHAMPION}: {why} ({_was(champion, incumbent)})"


def _model_id(version) -> str:
    """The LoggedModel a version was registered from (its source, models:/<model id>)."""
    return version.model_id or version.source.removeprefix("models:/")


def _was(champion, incumbent: Candidate | None) -> str:
    """What the replaced champion was, for promote's message."""
    if champion is None:
        return "there was no champion"
    if incumbent is None:
        return (
            f"champion version {champion.version} was trained or scored on other data, so it "
            "was not compared"
        )
    return f"champion version {champion.version} had {incumbent.score:.6g}"
