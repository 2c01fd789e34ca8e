"""The seed's loss and gradient from sufficient statistics: one pass over the data, then O(1).

For the model's output b + X w and A = [1, X] (N, degree + 1), the summed squared error is
    loss(t) = t^T G t - 2 t^T c + s,   t = (b, w),
with G = A^T A, c = A^T y and s = y^T y. They are summed once, in float64, from the same float32
features the seed's forward reads; every step after that costs the same at any n_samples, and
autograd differentiates the (degree + 1)-sized quadratic form instead of the N-sized forward.
The numbers equal autograd's up to rounding (float64 sums here, float32 there), so the default
`train.gradient: autograd` stays the seed's computation bit for bit; `gram` is for large data.
"""

from collections.abc import Callable

import torch

from polyfit.core.model import Polynomial, design
from polyfit.errors import UsageError

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


def gram_loss(
    model: Polynomial, x: torch.Tensor, target: torch.Tensor
) -> Callable[[], torch.Tensor]:
    """The summed squared error of a Polynomial on (x, target), from statistics."""
    if not isinstance(model, Polynomial):
        raise UsageError("train.gradient: gram works for the Polynomial model only; use autograd")
    gram, cross, total = statistics(x, target, model.degree)
    linear = model.linear

    def loss() -> torch.Tensor:
        theta = torch.cat([linear.bias, linear.weight[0]]).double()  # (degree + 1,): b, then w
        # Rounding can take an exact fit a hair below zero; the true loss never is.
        return (theta @ gram @ theta - 2 * theta @ cross + total).clamp_min(0)

    return loss
