"""`polyfit predict`: y for rows of features, from the DVC output models/model.pt or from an
MLflow model (`--model models:/NAME@champion`, `runs:/<run id>/model`, `models:/<model id>`).

The rows come from `--x` (for a model of one feature) or from `--csv FILE`, with a header row and
a column per feature, named as in the training data (other columns are ignored). The answer is
CSV on stdout: the features, then the prediction.
"""

import pandas as pd
import torch

from polyfit import files, paths
from polyfit.core.data import read_columns
from polyfit.core.model import build_model
from polyfit.core.scoring import predict
from polyfit.errors import UsageError
from polyfit.params import load_params
from polyfit.tracking.model import load_model

FLOAT32_MAX = torch.finfo(torch.float32).max


def main(args) -> None:
    params = load_params(paths.PARAMS)
    train, _ = files.load_table(paths.TRAIN_DATA)  # the features' names and number
    X = read_columns(args.csv, list(train.features)) if args.csv else one_feature(args.x, train)
    if args.model:  # a DataFrame with the features' names, as a client of `polyfit serve` sends
        rows = pd.DataFrame(X.double().numpy(), columns=list(train.features))
        predictions = load_model(args.model).predict(rows)
    else:
        model = build_model(params.model.model_dump(), len(train.features))
        files.load_weights(paths.MODEL, model)
        predictions = predict(model, X).tolist()
    print(",".join([*train.features, "prediction"]))
    for row, value in zip(X.tolist(), predictions, strict=True):
        print(",".join(repr(number) for number in [*row, value]))


def one_feature(values: list[float], train) -> torch.Tensor:
    """(N, 1) float32 from --x, refusing what float32 cannot hold (nan, inf, beyond 3.4e38)."""
    if len(train.features) != 1:
        raise UsageError(
            f"--x gives one feature; the model takes {list(train.features)}: use --csv"
        )
    x = torch.tensor(values, dtype=torch.float64)
    unusable = x[~(x.abs() <= FLOAT32_MAX)]  # nan compares false too
    if len(unusable):
        raise UsageError(
            f"--x {unusable[0].item():g} is not a finite float32 number (|x| <= 3.4e38)"
        )
    return x.float().unsqueeze(-1)
