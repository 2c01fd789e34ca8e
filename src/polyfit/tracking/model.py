"""The trained model as an MLflow 3 LoggedModel: logged by train, loaded by predict and serving.

The model is a pyfunc "from code" (serving.py, with polyfit's core package as code_paths) plus
the state_dict file as an artifact: nothing is pickled, so it loads with
MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false. Requirements are pinned here, so MLflow infers none
in a subprocess.
"""

import contextlib
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

from polyfit.errors import UsageError

NAME = "model"  # runs:/<run id>/model
INPUT_EXAMPLE = [-1.0, 0.0, 0.5, 1.0]  # x in, y out
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
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema

    client = run.client
    logged = client.create_logged_model(
        run.experiment_id,
        name=NAME,
        source_run_id=run.run_id,
        params={key: str(value) for key, value in params.items()},
        tags={key: str(value) for key, value in tags.items()},
        model_type="polynomial",
    )
    client.log_outputs(run.run_id, [LoggedModelOutput(logged.model_id, step=0)])
    # Given explicitly: type hints or an inferred signature would run the model (torch) here.
    signature = ModelSignature(Schema([ColSpec("double")]), Schema([ColSpec("double")]))
    description = Model(run_id=run.run_id, model_id=logged.model_id, model_uuid=logged.model_id)
    description.artifact_path = logged.artifact_location
    with tempfile.TemporaryDirectory() as scratch, _quiet():
        folder = Path(scratch) / NAME
        mlflow.pyfunc.save_model(
            folder,
            mlflow_model=description,
            python_model=str(SERVING_CODE),
            code_paths=[str(_core_package(Path(scratch) / "code"))],
            model_config=model_config,
            artifacts={"state_dict": str(state_dict)},
            signature=signature,
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
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    try:
        with _quiet():
            return mlflow.pyfunc.load_model(uri)
    except MlflowException as error:
        message = error.message.strip().splitlines()[0]
        if "MLmodel" in message:
            message = "not an MLflow model (logged before polyfit logged models?)"
        raise UsageError(f"{uri}: {message}") from None
    except OSError as error:
        raise UsageError(f"{uri}: cannot load: {error}") from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep MLflow's advice off stderr: it asks for the type hints we leave out on purpose
    (they would run the model while logging it). Errors still raise."""
    logger = logging.getLogger("mlflow.pyfunc")
    level = logger.level
    logger.setLevel(logging.WARNING)  # "Validating input example against model signature"
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # the warning, re-enabled by MLflow
            yield
    finally:
        logger.setLevel(level)
