"""Score a fitted model against the data and against the least-squares optimum (float64)."""

import math
import sys

import torch

from polyfit.model import coefficients, design, predict


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


def score(model, x, y, grid_x, grid_y, degree: int) -> dict:
    """Metrics on the training points and on a dense grid, next to the least-squares optimum."""
    optimum = least_squares(x, y, degree)
    coefs = coefficients(model)
    train_set = errors(predict(model, x, degree), y)
    optimum_mse = errors(polynomial(optimum, x), y)["mse"]
    return {
        "train_set": train_set,
        "grid": errors(predict(model, grid_x, degree), grid_y),
        "optimum": {
            "train_set_mse": optimum_mse,
            "grid_mse": errors(polynomial(optimum, grid_x), grid_y)["mse"],
        },
        # (model mse - optimum mse) / optimum mse: 0 is as good as this polynomial family gets
        "gap_to_optimum": (train_set["mse"] - optimum_mse) / max(optimum_mse, sys.float_info.min),
        "coef_distance": torch.linalg.vector_norm(coefs - optimum).item(),
        "coef_max_abs_diff": (coefs - optimum).abs().max().item(),
    }
