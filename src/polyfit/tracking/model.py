"""The trained model as an MLflow 3 LoggedModel: logged by train, loaded by predict and serving,
and looked up in the store first (resolve), so a missing model is one line that says what to do.

The model is a pyfunc "from code" (serving.py, with polyfit's core package as code_paths) plus
the state_dict file as an artifact: nothing is pickled, so it loads with
MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false. Requirements are pinned here, so MLflow infers none
in a subprocess.
"""

import os
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

from polyfit.errors import PolyfitError, UsageError

NAME = "model"  # runs:/<run id>/model
# x in, y out. Also the input's type (serving.py's TypeFromExample): MLflow runs the model on it
# while logging, and records the signature the UI shows.
INPUT_EXAMPLE = [-1.0, 0.0, 0.5, 1.0]
SERVING_CODE = Path(__file__).with_name("serving.py")
PACKAGE = Path(__file__).parents[1]  # src/polyfit: its __init__.py and core/ are shipped


def requirements() -> list[str]:
    """Exact pins, so MLflow does not infer them in a subprocess; torch without its +cpu tag."""
    return [f"torch=={version('torch').split('+')[0]}", f"mlflow=={version('mlflow')}"]


def log_model(run, state_dict: Path, model_config: dict, params: dict, tags: dict) -> str:
    """Log the state_dict file as a LoggedModel of the (train) run; return its model_id.
    model_config is params.model: what build_model needs to rebuild the model at load time."""
    import mlflow.pyfunc
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    client = run.client
    logged = client.create_logged_model(
        run.experiment_id,
        name=NAME,
        source_run_id=run.run_id,
        params={key: str(value) for key, value in params.items()},
        tags={key: str(value) for key, value in tags.items()},
        model_type="pytorch",  # any nn.Module: build_model(model_config) says which
    )
    client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, step=0)])
    description = Model(run_id=run.run_id, model_id=logged.model_id, model_uuid=logged.model_id)
    description.artifact_path = logged.artifact_location
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / NAME
        mlflow.pyfunc.save_model(
            folder,
            mlflow_model=description,
            python_model=str(SERVING_CODE),
            code_paths=[str(_core_package(Path(scratch) / "code"))],
            model_config=model_config,
            artifacts={"state_dict": str(state_dict)},
            input_example=INPUT_EXAMPLE,
            pip_requirements=requirements(),
        )
        try:
            client.log_model_artifacts(logged.model_id, str(folder))
        except OSError as error:  # it names our temporary copy; the full folder is the store's
            error.filename = logged.artifact_location.removeprefix("file://")
            raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return logged.model_id


def _core_package(folder: Path) -> Path:
    """A copy of polyfit/__init__.py and polyfit/core/: all the served model imports."""
    package = folder / "polyfit"
    shutil.copytree(
        PACKAGE / "core", package / "core", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy2(PACKAGE / "__init__.py", package / "__init__.py")
    return package


def load_model(uri: str):
    """A pyfunc model from a models:/ or runs:/ URI, refusing pickles; one-line errors."""
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # never unpickle store content
    from polyfit.tracking import store

    resolve(store.make_client(store.tracking_uri()), uri)
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.pyfunc.load_model(uri)
    except MlflowException as error:
        message = error.message.strip().splitlines()[0]
        raise UsageError(f"{uri}: {message}") from None
    except OSError as error:
        raise UsageError(f"{uri}: cannot load: {error}") from None
    except Exception as error:  # damaged artifacts fail inside torch or the model's own code
        raise PolyfitError(f"{uri}: cannot load: {store.one_line(error)}") from None


def resolve(client, uri: str) -> None:
    """Fail in one line that says what to do when `uri` names nothing in the store:
    models:/NAME@ALIAS, models:/NAME/VERSION, models:/MODEL_ID or runs:/RUN_ID/NAME."""
    from mlflow.exceptions import MlflowException

    from polyfit.tracking import store

    store.probe_store()  # a dead tracking server fails in seconds, in one line
    where = store.tracking_uri()
    try:
        if uri.startswith("runs:/"):
            _resolve_run(client, uri, where)
        elif uri.startswith("models:/"):
            _resolve_model(client, uri, where)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise UsageError(f"{uri}: {store.one_line(error)}") from None
        raise UsageError(f"{uri}: not found in {where}: {store.one_line(error)}") from None


def _resolve_model(client, uri: str, where: str) -> None:
    from polyfit.tracking.registry import CHAMPION

    path = uri.removeprefix("models:/")
    if "@" in path:
        (name, _, alias), number = path.partition("@"), ""
    elif "/" in path:
        (name, _, number), alias = path.partition("/"), ""
    else:  # models:/<model id>
        client.get_logged_model(path)
        return
    if not client.search_registered_models(f"name = '{name}'"):
        raise UsageError(
            f"{uri}: no registered model {name!r} in {where}: run `dvc repro` (`make run`) "
            "first; every train run registers a version"
        )
    aliases = client.get_registered_model(name).aliases
    if alias == CHAMPION and alias not in aliases:
        raise UsageError(f"{uri}: no version of {name!r} is {CHAMPION} yet: run `polyfit promote`")
    if alias and alias.lower() != "latest" and alias not in aliases:
        raise UsageError(f"{uri}: {name!r} has no alias {alias!r} (it has {sorted(aliases)})")
    if alias in aliases or number.isdigit():
        _version(client, uri, name, aliases.get(alias, number))
    # Otherwise 'latest' or a stage name, which MLflow resolves itself.


def _version(client, uri: str, name: str, number: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, number)
    except MlflowException:
        numbers = [int(v.version) for v in client.search_model_versions(f"name = '{name}'")]
        newest = f"the newest is {max(numbers)}" if numbers else "it has none: run `dvc repro`"
        raise UsageError(f"{uri}: {name!r} has no version {number}; {newest}") from None


def _resolve_run(client, uri: str, where: str) -> None:
    from mlflow.exceptions import MlflowException

    run_id, _, name = uri.removeprefix("runs:/").partition("/")
    try:
        run = client.get_run(run_id)
    except MlflowException:
        hint = "copy a train run's id from `make ui`"
        raise UsageError(f"{uri}: no run {run_id} in {where}: {hint}") from None
    outputs = run.outputs.model_outputs if run.outputs else []
    logged = [client.get_logged_model(output.model_id).name for output in outputs]
    if name not in logged and not client.list_artifacts(run_id, name):
        raise UsageError(
            f"{uri}: run {run_id} logged no model {name!r}: a train run does "
            f"(runs:/<train run id>/{NAME})"
        )
