"""The trained polynomial as an MLflow pyfunc model, logged "from code": MLflow stores this file,
not a pickle, and rebuilds the model from it and the state_dict artifact (models/model.pt).

Self-contained on purpose (torch and mlflow only), so a registry version loads and serves on any
machine with those two packages, without polyfit installed. tests/test_models.py checks that it
predicts exactly what polyfit.model does.
"""

import mlflow
from mlflow.pyfunc import PythonModel

STATE_DICT = "state_dict"  # the artifact's key: the DVC output models/model.pt, same bytes


class Polynomial(PythonModel):
    """y = a + b x + c x^2 + ...: Linear(degree, 1) then Flatten(0, 1) on the powers of x."""

    def load_context(self, context) -> None:
        import torch

        weights = torch.load(context.artifacts[STATE_DICT], weights_only=True, map_location="cpu")
        self.degree = weights["0.weight"].shape[1]
        self.model = torch.nn.Sequential(torch.nn.Linear(self.degree, 1), torch.nn.Flatten(0, 1))
        self.model.load_state_dict(weights)
        self.model.eval()

    # No type hints: MLflow would run the model to check them while logging it. It warns instead.
    def predict(self, context, model_input, params=None):
        """A list of x in, the list of y out (float32, as trained)."""
        import numpy as np
        import torch

        # MLflow hands over a one-column DataFrame; a plain list works the same. (N,)
        x = torch.from_numpy(np.asarray(model_input, dtype=np.float32).reshape(-1))
        powers = torch.arange(1, self.degree + 1)
        with torch.no_grad():
            return self.model(x.unsqueeze(-1).pow(powers)).tolist()  # (N, degree) -> (N,)


mlflow.models.set_model(Polynomial())
