"""The trained model as an MLflow pyfunc model, logged "from code": MLflow keeps this file and a
copy of core/model.py as it was at training time, not a pickle, and rebuilds the model from
them, its config and the state_dict artifact.

It imports nothing of polyfit, on purpose: a model version loads with the code it was logged
with, whichever polyfit the loading process has installed (or none).
"""

import importlib.util
import uuid

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

STATE_DICT = "state_dict"  # the artifact's key: the DVC output models/model.pt, same bytes
MODEL_CODE = "model_code"  # the artifact's key: core/model.py when the model was trained
FLOAT32_MAX = float(np.finfo(np.float32).max)


class TrainedModel(PythonModel):
    """Rows of features in, one y per row out: the model params.model described at training."""

    def load_context(self, context) -> None:
        code = _import_file(context.artifacts[MODEL_CODE])
        self.features = list(context.model_config["features"])
        self.model = code.build_model(context.model_config["model"], len(self.features))
        weights = torch.load(context.artifacts[STATE_DICT], weights_only=True, map_location="cpu")
        self.model.load_state_dict(weights)
        self.model.eval()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[float]:
        """A DataFrame (or rows) of the features in, the list of y out (float32, as trained)."""
        X = torch.tensor(self.rows(model_input), dtype=torch.float32)
        with torch.no_grad():
            return self.model(X).tolist()

    def rows(self, model_input) -> np.ndarray:
        """(N, F) float64: columns named as the features, in any order, or F columns by position;
        a 400 answer with the reason, not a nan, for anything else."""
        columns = [str(name) for name in getattr(model_input, "columns", [])]
        if columns and all(not name.isdigit() for name in columns):  # named, not 0, 1, ...
            missing = [name for name in self.features if name not in columns]
            unknown = [name for name in columns if name not in self.features]
            if missing or unknown:
                raise _refused(f"expected the columns {self.features}, got {columns}")
            model_input = model_input[self.features]
        try:
            X = np.ascontiguousarray(model_input, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise _refused(f"not numbers: {error}") from None
        if X.ndim == 1 and len(self.features) == 1:
            X = X.reshape(-1, 1)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise _refused(f"expected rows of {len(self.features)} value(s), got shape {X.shape}")
        if not (np.abs(X) <= FLOAT32_MAX).all():  # nan compares false too
            bad = X[~(np.abs(X) <= FLOAT32_MAX)][0]
            raise _refused(f"{bad:g} is not a finite float32 number (|x| <= 3.4e38)")
        return X


def _refused(reason: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(f"input: {reason}")


def _import_file(path: str):
    """The module at `path` under a name of its own: two model versions in one process each
    keep their own classes."""
    spec = importlib.util.spec_from_file_location(f"polyfit_model_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mlflow.models.set_model(TrainedModel())
