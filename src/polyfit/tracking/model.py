"""The trained model as an MLflow 3 LoggedModel: logged by train, loaded by predict and serving,
and looked up in the store first (resolve), so a missing model is one line that says what to do.

The model is a pyfunc "from code" (serving.py) with two artifacts: the state_dict file and a copy
of core/model.py, the code that builds it. Nothing is pickled, so it loads with
MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false, and each version loads with its own code.
Requirements are pinned here, so MLflow infers none in a subprocess.
"""

import os
import tempfile
import warnings
from importlib.metadata import version
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, Schema

from polyfit.core import model as model_code
from polyfit.core.data import Table
from polyfit.errors import PolyfitError, UsageError, one_line
from polyfit.tracking import store
from polyfit.tracking.names import CHAMPION
from polyfit.tracking.serving import MODEL_CODE, STATE_DICT
from polyfit.tracking.uri import probe_store, tracking_uri

NAME = "model"  # runs:/<run id>/model
SERVING_CODE = Path(__file__).with_name("serving.py")
EXAMPLE_ROWS = 2  # of the training table: the input example the UI and `mlflow models` show


def requirements() -> list[str]:
    """Exact pins, so MLflow does not infer them in a subprocess; torch without its +cpu tag."""
    return [f"torch=={version('torch').split('+')[0]}", f"mlflow=={version('mlflow')}"]


def signature() -> ModelSignature:
    """One double out per row. The input is left to serving.py, which takes named columns in any
    order ({"dataframe_split": ...}) and rows by position ({"inputs": [[...], ...]}) and refuses
    any other width: an input schema of MLflow's would either refuse rows by position (named
    columns) or silently drop the columns past F (unnamed ones). The input example shows the
    columns."""
    return ModelSignature(inputs=None, outputs=Schema([ColSpec("double")]))


def log_model(run, state_dict: Path, model_config: dict, train: Table, params: dict, tags: dict):
    """Log the state_dict file as the (train) run's LoggedModel; return its model_id. A run
    that already has a complete one (a resumed training that died after logging it) keeps it."""
    client = run.client
    if existing := _logged_by(client, run):
        return existing
    logged = client.create_logged_model(
        run.experiment_id,
        name=NAME,
        source_run_id=run.run_id,
        params={key: str(value) for key, value in params.items()},
        tags={key: str(value) for key, value in tags.items()}
        | {"features": ",".join(train.features)},
        model_type="pytorch",  # any nn.Module: build_model(model_config, F) says which
    )
    client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, step=0)])
    description = Model(run_id=run.run_id, model_id=logged.model_id, model_uuid=logged.model_id)
    description.artifact_path = logged.artifact_location
    example = pd.DataFrame(train.X[:EXAMPLE_ROWS].double().numpy(), columns=list(train.features))
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        # MLflow compares the example's columns with a range, which pandas 3 deprecates.
        warnings.filterwarnings("ignore", "Operation with range is deprecated")
        folder = Path(scratch) / NAME
        mlflow.pyfunc.save_model(
            folder,
            mlflow_model=description,
            python_model=str(SERVING_CODE),
            model_config={"model": model_config, "features": list(train.features)},
            artifacts={STATE_DICT: str(state_dict), MODEL_CODE: model_code.__file__},
            input_example=example,
            signature=signature(),
            pip_requirements=requirements(),
        )
        try:
            client.log_model_artifacts(logged.model_id, str(folder))
        except OSError as error:  # it names our temporary copy; the full folder is the store's
            error.filename = logged.artifact_location.removeprefix("file://")
            raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return logged.model_id


def _logged_by(client, run) -> str | None:
    """The id of the READY LoggedModel the run already logged, if any; an unfinished one is
    deleted, so the run ends with one model."""
    found = client.search_logged_models(
        [run.experiment_id], filter_string=f"source_run_id = '{run.run_id}'"
    )
    for logged in found:
        if logged.status == LoggedModelStatus.READY:
            return logged.model_id
        client.delete_logged_model(logged.model_id)
    return None


def load_model(uri: str):
    """A pyfunc model from a models:/ or runs:/ URI, refusing pickles; one-line errors."""
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # never unpickle store content
    resolve(store.make_client(tracking_uri()), uri)
    try:
        return mlflow.pyfunc.load_model(uri)
    except MlflowException as error:
        raise UsageError(f"{uri}: {one_line(error)}") from None
    except OSError as error:
        raise UsageError(f"{uri}: cannot load: {error}") from None
    except Exception as error:  # damaged artifacts fail inside torch or the model's own code
        raise PolyfitError(f"{uri}: cannot load: {one_line(error)}") from None


def resolve(client, uri: str) -> None:
    """Fail in one line that says what to do when `uri` names nothing in the store:
    models:/NAME@ALIAS, models:/NAME/VERSION, models:/MODEL_ID or runs:/RUN_ID/NAME."""
    probe_store()  # a dead tracking server fails in seconds, in one line
    where = tracking_uri()
    try:
        if uri.startswith("runs:/"):
            _resolve_run(client, uri, where)
        elif uri.startswith("models:/"):
            _resolve_model(client, uri, where)
    except MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise UsageError(f"{uri}: {one_line(error)}") from None
        raise UsageError(f"{uri}: not found in {where}: {one_line(error)}") from None


def _resolve_model(client, uri: str, where: str) -> None:
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
            "first; the first trained model is registered"
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
    try:
        return client.get_model_version(name, number)
    except MlflowException:
        numbers = [int(v.version) for v in client.search_model_versions(f"name = '{name}'")]
        newest = f"the newest is {max(numbers)}" if numbers else "it has none"
        raise UsageError(f"{uri}: {name!r} has no version {number}; {newest}") from None


def _resolve_run(client, uri: str, where: str) -> None:
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
