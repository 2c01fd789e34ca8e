"""The trained model as an MLflow 3 LoggedModel: logged by train, loaded by predict and serving.

The model is a pyfunc "from code" (serving.py) plus the state_dict file as an artifact: nothing
is pickled, so it loads with MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false. Logging it runs neither
the model nor a requirements-inference subprocess, so the stage process never imports torch.
"""

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

from polyfit.errors import UsageError

NAME = "model"  # runs:/<run id>/model
INPUT_EXAMPLE = [-1.0, 0.0, 0.5, 1.0]  # x in, y out
SERVING_CODE = Path(__file__).with_name("serving.py")


def requirements() -> list[str]:
    """Exact pins, so MLflow does not infer them in a subprocess; torch without its +cpu tag."""
    return [f"torch=={version('torch').split('+')[0]}", f"mlflow=={version('mlflow')}"]


def preload() -> None:
    """Import pyfunc and run now the check MLflow makes when saving a model: whether the pinned
    requirements are installed. It scans every installed package (~0.4 s) and caches the scan;
    train does this while its worker trains."""
    import mlflow.pyfunc  # noqa: F401
    from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

    warn_dependency_requirement_mismatches(requirements())


def log_model(run, state_dict: Path, params: dict, tags: dict) -> str:
    """Log the state_dict file as a LoggedModel of the (train) run; return its model_id."""
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
    (they would run the model, and import torch, while logging it). Errors still raise."""
    logger = logging.getLogger("mlflow.pyfunc")
    level = logger.level
    logger.setLevel(logging.WARNING)  # "Validating input example against model signature"
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # the warning, re-enabled by MLflow
            yield
    finally:
        logger.setLevel(level)
