"""The tutorial's setting, shared by the tests in this folder: the seed's script, and the same
training through polyfit's own functions."""

import functools
import math

import numpy as np
import torch
from conftest import default_params

from polyfit.core.batches import full_batch
from polyfit.core.data import Table, from_function
from polyfit.core.fit import build_optimizer, fit
from polyfit.core.model import Polynomial
from polyfit.params import validate_params

PARAMS = validate_params(default_params())
SIN = PARAMS.data.function.model_dump()  # target sin, [-pi, pi], 2000 points, no noise


def seed_loop(steps: int, seed: int = 0):
    """The tutorial's script, verbatim apart from seeding and recording the losses."""
    torch.manual_seed(seed)
    x = torch.linspace(-math.pi, math.pi, 2000)
    y = torch.sin(x)
    p = torch.tensor([1, 2, 3])
    xx = x.unsqueeze(-1).pow(p)
    model = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0, 1))
    loss_fn = torch.nn.MSELoss(reduction="sum")
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        y_pred = model(xx)
        loss = loss_fn(y_pred, y)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses, model


def sin_tables(**changes) -> tuple[Table, Table]:
    return from_function(**SIN | changes)


def our_fit(optimizer: str = "RMSprop", lr: float = 1e-3, steps: int = 2000, degree: int = 3):
    """polyfit's full-batch training on the tutorial's data: (losses, model, training table)."""
    train, _ = sin_tables()
    torch.manual_seed(0)
    model = Polynomial(1, degree)
    options = getattr(PARAMS.train.options, optimizer).model_dump()
    opt = build_optimizer(optimizer, model.parameters(), lr, options)
    losses = fit(model, opt, full_batch(train.X, train.y), steps, 100, 1e3)
    return losses, model, train


@functools.cache
def seed_settings_fit():
    """our_fit() on the seed's settings, trained once for the tests that only read its result."""
    return our_fit()


def numpy_optimum(x: torch.Tensor, y: torch.Tensor, degree: int) -> np.ndarray:
    """(degree + 1,) float64 least-squares coefficients, by NumPy alone."""
    vandermonde = np.vander(x.double().numpy(), degree + 1, increasing=True)  # 1, x, x^2, ...
    return np.linalg.lstsq(vandermonde, y.double().numpy(), rcond=None)[0]
