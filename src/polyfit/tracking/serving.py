"""The trained model as an MLflow pyfunc model, logged "from code": MLflow stores this file, not a
pickle, and rebuilds the model from polyfit's core/model.py (shipped beside it as code_paths, so it
loads where polyfit is not installed), the model's config and the state_dict artifact.
"""

import mlflow
from mlflow.pyfunc import PythonModel

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

    # No type hints: MLflow would run the model to check them while logging it. It warns instead.
    def predict(self, context, model_input, params=None):
        """A list of x in, the list of y out (float32, as trained)."""
        import numpy as np
        import torch

        # MLflow hands over a one-column DataFrame; a plain list works the same. (N,)
        x = torch.from_numpy(np.asarray(model_input, dtype=np.float32).reshape(-1))
        with torch.no_grad():
            return self.model(x).tolist()


mlflow.models.set_model(TrainedModel())
