"""`polyfit predict`: y at given x from the DVC model, or from the model an MLflow run logged."""

from polyfit import files, paths
from polyfit.params import load_params


def main(args) -> None:
    params = load_params(paths.PARAMS)
    degree = params.model.degree
    if args.run:
        from polyfit.tracking import download_model

        source, content = f"run {args.run}", download_model(args.run)
    else:
        source, content = str(paths.MODEL), files.read_bytes(paths.MODEL)
    state_dict, _ = files.load_state_dict(source, degree, content)

    import torch

    from polyfit.model import build_model, predict

    model = build_model(degree)
    model.load_state_dict(state_dict)
    x = torch.tensor(args.x, dtype=torch.float32)  # the dtype the model was trained in
    for point, value in zip(args.x, predict(model, x, degree).tolist(), strict=True):
        print(point, value)
