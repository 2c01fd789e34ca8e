"""Score a fitted model, in float64: on the rows it trained on and on the held-out rows; for the
tutorial's Polynomial, also against the least-squares optimum of its family on the training
rows (the best any optimizer could reach)."""

import math
import sys

import torch

from polyfit.core.data import Table
from polyfit.core.gram import design
from polyfit.core.model import Polynomial


def predict(model: torch.nn.Module, X: torch.Tensor) -> torch.Tensor:
    """model(X) (N,) without tracking gradients."""
    with torch.no_grad():
        return model(X)


def errors(prediction: torch.Tensor, truth: torch.Tensor) -> dict:
    """mse, rmse and max absolute error, computed in float64."""
    residual = prediction.double() - truth.double()
    mse = residual.square().mean().item()
    return {"mse": mse, "rmse": math.sqrt(mse), "max_abs_error": residual.abs().max().item()}


def score(model: torch.nn.Module, train: Table, held_out: Table) -> dict:
    """Errors on the training rows and on the held-out rows; for a Polynomial, its distance
    from the least-squares optimum."""
    scores = {
        "train_set": errors(predict(model, train.X), train.y),
        "held_out": errors(predict(model, held_out.X), held_out.y),
    }
    if isinstance(model, Polynomial):
        scores |= against_optimum(model, train, held_out, scores["train_set"]["mse"])
    return scores


def least_squares(model: Polynomial, table: Table) -> torch.Tensor:
    """float64 coefficients (bias first, as Polynomial.coefficients) that minimise the squared
    error on the table, from powers computed in float64."""
    matrix = design(model, table.X.double())
    return torch.linalg.lstsq(matrix, table.y.double().unsqueeze(-1), driver="gelsd").solution[:, 0]


def against_optimum(model: Polynomial, train: Table, held_out: Table, mse: float) -> dict:
    """The least-squares polynomial of the model's family: its errors, and the model's distance."""
    optimum = least_squares(model, train)
    coefs = model.coefficients()
    optimum_mse = errors(design(model, train.X.double()) @ optimum, train.y)["mse"]
    held_out_mse = errors(design(model, held_out.X.double()) @ optimum, held_out.y)["mse"]
    return {
        "optimum": {"train_set_mse": optimum_mse, "held_out_mse": held_out_mse},
        # (model mse - optimum mse) / optimum mse: 0 is as good as this polynomial family gets
        "gap_to_optimum": (mse - optimum_mse) / max(optimum_mse, sys.float_info.min),
        "coef_distance": torch.linalg.vector_norm(coefs - optimum).item(),
        "coef_max_abs_diff": (coefs - optimum).abs().max().item(),
    }
