"""`polyfit predict`: y at given x from the DVC output models/model.pt, or from an MLflow model
(`--model models:/polyfit-cubic@champion`, `runs:/<run id>/model`, `models:/<model id>`)."""

from polyfit import files, paths
from polyfit.errors import UsageError
from polyfit.params import load_params


def main(args) -> None:
    from polyfit.core.model import as_points

    try:
        x = as_points(args.x)  # refused before any model loads
    except ValueError as error:
        raise UsageError(f"--x {error}") from None
    if args.model:
        from polyfit.tracking.model import load_model

        predictions = load_model(args.model).predict(args.x)
    else:
        predictions = predict_file(x)
    for point, value in zip(args.x, predictions, strict=True):
        print(point, value)


def predict_file(x) -> list[float]:
    """The DVC output's predictions at x (float32, as trained): the model params.model
    describes, with the weights loaded with weights_only=True."""
    from polyfit.core.model import build_model, predict

    model = build_model(load_params(paths.PARAMS).model.model_dump())
    files.load_weights(paths.MODEL, model)
    return predict(model, x).tolist()
