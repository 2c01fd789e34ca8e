"""The seed's loss and gradient from sufficient statistics: one pass over the data, then O(1).

For the model's output b + X w and A = [1, X] (N, degree + 1), the summed squared error is
    loss(t) = t^T G t - 2 t^T c + s,   gradient = 2 (G t - c),   t = (b, w),
with G = A^T A, c = A^T y and s = y^T y. They are summed once, in float64, from the same float32
features the seed's forward reads; every step after that costs the same at any n_samples.
The numbers equal autograd's up to rounding (float64 sums here, float32 there), so the default
`train.gradient: autograd` stays the seed's computation bit for bit; `gram` is for large data.
"""

import torch

from polyfit.fit import Objective
from polyfit.model import coefficients, design

CHUNK_ROWS = 1 << 16  # float64 temporaries of a few MB, however many samples


def statistics(
    x: torch.Tensor, target: torch.Tensor, degree: int, chunk_rows: int = CHUNK_ROWS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(G, c, s) of the design [1, x, ..., x^degree] and target, float64, chunk by chunk."""
    gram = torch.zeros(degree + 1, degree + 1, dtype=torch.float64)
    cross = torch.zeros(degree + 1, dtype=torch.float64)
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, len(x), chunk_rows):
        x_chunk, y_chunk = x[start : start + chunk_rows], target[start : start + chunk_rows]
        matrix = design(x_chunk, degree).double()  # (n, degree + 1): float32 inputs, widened
        y_chunk = y_chunk.double()
        gram += matrix.T @ matrix
        cross += matrix.T @ y_chunk
        total += y_chunk @ y_chunk
    return gram, cross, total


def gram_objective(
    model: torch.nn.Sequential, x: torch.Tensor, target: torch.Tensor, degree: int
) -> Objective:
    """The summed squared error of model (Linear, Flatten) on (x, target), from statistics."""
    gram, cross, total = statistics(x, target, degree)
    linear = model[0]

    def objective() -> torch.Tensor:
        theta = coefficients(model)  # (degree + 1,) float64: bias, then weights
        gram_theta = gram @ theta
        # Rounding can take an exact fit a hair below zero; the true loss never is.
        loss = (theta @ gram_theta - 2 * theta @ cross + total).clamp_min(0)
        gradient = 2 * (gram_theta - cross)
        linear.bias.grad = gradient[:1].to(linear.bias.dtype)
        linear.weight.grad = gradient[1:].to(linear.weight.dtype).unsqueeze(0)
        return loss

    return objective
