"""`polyfit predict`: y at given x from the DVC output models/model.pt, or from an MLflow model
(`--model models:/polyfit-cubic@champion`, `runs:/<run id>/model`, `models:/<model id>`)."""

from polyfit import files, paths
from polyfit.params import load_params


def main(args) -> None:
    if args.model:
        from polyfit.tracking.model import load_model

        predictions = load_model(args.model).predict(args.x)
    else:
        predictions = predict_file(args.x)
    for point, value in zip(args.x, predictions, strict=True):
        print(point, value)


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
