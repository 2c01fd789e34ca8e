"""Score a fitted model (float64): on its training points, on the dense grid of the noise-free
target when the data has one (core/data.py evaluation_grid), and, for a Polynomial only, against
the least-squares optimum of its degree; other models get the errors alone."""

import math
import sys

import torch

from polyfit.core.model import Polynomial, design, predict


def least_squares(x: torch.Tensor, y: torch.Tensor, degree: int) -> torch.Tensor:
    """(degree + 1,) float64: the coefficients that minimise the squared error on (x, y)."""
    matrix = design(x.double(), degree)  # (N, degree + 1)
    return torch.linalg.lstsq(matrix, y.double().unsqueeze(-1), driver="gelsd").solution[:, 0]


def polynomial(coefs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Evaluate sum_k coefs[k] x^k in the dtype of coefs."""
    x = x.to(coefs.dtype)
    result = torch.zeros_like(x)
    for c in coefs.flip(0):  # Horner
        result = result * x + c
    return result


def errors(prediction: torch.Tensor, truth: torch.Tensor) -> dict:
    """mse, rmse and max absolute error, computed in float64."""
    residual = prediction.double() - truth.double()
    mse = residual.square().mean().item()
    return {"mse": mse, "rmse": math.sqrt(mse), "max_abs_error": residual.abs().max().item()}


def score(model: torch.nn.Module, x, y, grid: tuple | None = None) -> dict:
    """Errors on the training points and, given (grid_x, grid_y), on a dense grid of the
    noise-free target; for a Polynomial, also how far it is from the least-squares optimum."""
    scores = {"train_set": errors(predict(model, x), y)}
    if grid is not None:
        scores["grid"] = errors(predict(model, grid[0]), grid[1])
    if isinstance(model, Polynomial):
        scores |= against_optimum(model, x, y, grid, scores["train_set"]["mse"])
    return scores


def against_optimum(model: Polynomial, x, y, grid: tuple | None, mse: float) -> dict:
    """The least-squares polynomial of the model's degree: its errors, and the model's distance."""
    optimum = least_squares(x, y, model.degree)
    coefs = model.coefficients()
    optimum_mse = errors(polynomial(optimum, x), y)["mse"]
    scores = {"optimum": {"train_set_mse": optimum_mse}}
    if grid is not None:
        scores["optimum"]["grid_mse"] = errors(polynomial(optimum, grid[0]), grid[1])["mse"]
    return scores | {
        # (model mse - optimum mse) / optimum mse: 0 is as good as this polynomial family gets
        "gap_to_optimum": (mse - optimum_mse) / max(optimum_mse, sys.float_info.min),
        "coef_distance": torch.linalg.vector_norm(coefs - optimum).item(),
        "coef_max_abs_diff": (coefs - optimum).abs().max().item(),
    }
