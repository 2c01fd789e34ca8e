"""The seed's loss from sufficient statistics: one pass over the data, then O(1) per step.

For a Polynomial's output b + P w, with P its powers of X and A = [1, P] (N, 1 + F * degree),
the summed squared error is
    loss(t) = t^T G t - 2 t^T c + s,   t = (b, w),
with G = A^T A, c = A^T y and s = y^T y. They are summed once, in float64, from the same float32
powers the seed's forward reads; every step after that costs the same at any number of rows, and
autograd differentiates the small quadratic form instead of the N-sized forward. The numbers
equal autograd's up to rounding (float64 sums here, float32 there), so the default
`train.gradient: autograd` stays the seed's computation bit for bit; `gram` is for large data.
"""

import torch

from polyfit.core.model import Polynomial
from polyfit.errors import UsageError

CHUNK_ROWS = 1 << 16  # float64 temporaries of a few MB, however many rows


def design(model: Polynomial, X: torch.Tensor) -> torch.Tensor:
    """(N, F) -> (N, 1 + F * degree) float64: a column of ones (the bias), then the powers."""
    powers = model.powers(X).double()
    return torch.cat([torch.ones(len(X), 1, dtype=powers.dtype, device=X.device), powers], dim=1)


def statistics(
    model: Polynomial, X: torch.Tensor, y: torch.Tensor, chunk_rows: int = CHUNK_ROWS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(G, c, s) of the design and target, float64, chunk by chunk."""
    size = 1 + model.linear.in_features
    gram = torch.zeros(size, size, dtype=torch.float64, device=X.device)
    cross = torch.zeros(size, dtype=torch.float64, device=X.device)
    total = torch.zeros((), dtype=torch.float64, device=X.device)
    for start in range(0, len(X), chunk_rows):
        matrix = design(model, X[start : start + chunk_rows])
        y_chunk = y[start : start + chunk_rows].double()
        gram += matrix.T @ matrix
        cross += matrix.T @ y_chunk
        total += y_chunk @ y_chunk
    return gram, cross, total


def gram_loss(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor):
    """The summed squared error of a Polynomial on the whole of (X, y), from statistics: a
    loss_function for fit() that ignores the batch it is given."""
    if not isinstance(model, Polynomial):
        raise UsageError("train.gradient: gram works for the Polynomial model only; use autograd")
    gram, cross, total = statistics(model, X, y)
    linear = model.linear

    def loss(model, X, y) -> torch.Tensor:
        theta = torch.cat([linear.bias, linear.weight[0]]).double()  # (1 + F * degree,)
        # Rounding can take an exact fit a hair below zero; the true loss never is.
        return (theta @ gram @ theta - 2 * theta @ cross + total).clamp_min(0)

    return loss
