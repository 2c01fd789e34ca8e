"""The trained model as an MLflow pyfunc model, logged "from code": MLflow stores this file, not a
pickle, and rebuilds the model from polyfit's core/model.py (shipped beside it as code_paths, so it
loads where polyfit is not installed), the model's config and the state_dict artifact.
"""

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel
from mlflow.types.type_hints import TypeFromExample

STATE_DICT = "state_dict"  # the artifact's key: the DVC output models/model.pt, same bytes


class TrainedModel(PythonModel):
    """x in, y out: the model params.model describes, with the weights train wrote."""

    def load_context(self, context) -> None:
        import torch

        from polyfit.core.model import build_model

        self.model = build_model(context.model_config)
        weights = torch.load(context.artifacts[STATE_DICT], weights_only=True, map_location="cpu")
        self.model.load_state_dict(weights)
        self.model.eval()

    # TypeFromExample: the input is typed by the input example (a list of floats), so MLflow
    # records a signature and hands predict a list, also for a one-column DataFrame request
    # ({"dataframe_split": ...}), which a list[float] hint would refuse. It runs the model on the
    # example while logging it.
    def predict(self, context, model_input: TypeFromExample, params=None) -> list[float]:
        """A list of x in, the list of y out (float32, as trained)."""
        import numpy as np

        from polyfit.core.model import as_points, predict

        try:  # a list, or a one-column DataFrame where MLflow passes one (inferring the signature)
            x = as_points(np.asarray(model_input, dtype=np.float64))
        except ValueError as error:  # a 400 answer with the reason, not nan
            raise MlflowException.invalid_parameter_value(f"x: {error}") from None
        return predict(self.model, x).tolist()


mlflow.models.set_model(TrainedModel())
