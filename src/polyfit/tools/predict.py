"""`polyfit predict`: y at given x from the DVC output models/model.pt, or from an MLflow model
(`--model models:/polyfit-cubic@champion`, `runs:/<run id>/model`, `models:/<model id>`)."""

import math

from polyfit import files, paths
from polyfit.errors import UsageError
from polyfit.params import load_params

FLOAT32_MAX = 3.4028234663852886e38  # the model computes in float32


def main(args) -> None:
    check_points(args.x)
    if args.model:
        from polyfit.tracking.model import load_model

        predictions = load_model(args.model).predict(args.x)
    else:
        predictions = predict_file(args.x)
    for point, value in zip(args.x, predictions, strict=True):
        print(point, value)


def check_points(xs: list[float]) -> None:
    """Refuse points float32 cannot hold: their prediction would be nan, not an answer."""
    for x in xs:
        if not math.isfinite(x):
            raise UsageError(f"--x {x}: not a finite number")
        if abs(x) > FLOAT32_MAX:
            raise UsageError(f"--x {x:g}: beyond float32's range (+-3.4e38), which the model uses")


def predict_file(xs: list[float]) -> list[float]:
    """The DVC output's predictions at xs: the model params.model describes, with the weights
    loaded with weights_only=True."""
    model_config = load_params(paths.PARAMS).model.model_dump()

    import torch

    from polyfit.core.model import build_model, predict

    model = build_model(model_config)
    files.load_weights(paths.MODEL, model)
    x = torch.tensor(xs, dtype=torch.float32)  # the dtype the model was trained in
    return predict(model, x).tolist()
