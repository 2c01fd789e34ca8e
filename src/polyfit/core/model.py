"""The model: the seed's cubic as one nn.Module that takes x and owns its features.

Every consumer (train, evaluate, predict, the served MLflow model) builds it with build_model
from params.model, so the architecture is written once. To fit another model (docs/adapting.md),
add its class here and make build_model return it. What the pipeline needs of a model:
- build_model(config): config is params.model as a dict (validated by params.ModelParams);
- forward(x): (N,) float32 -> (N,), one y per x;
- features(x): (N,) -> (N, F), the part of forward without parameters. Training computes it once
  and calls from_features(features) -> (N,) every step, so forward(x) must equal
  from_features(features(x));
- a state_dict of float32 tensors only (models/model.pt is loaded with weights_only=True);
- imports of torch and polyfit.core only: the served model ships src/polyfit/core/ as its code.
The least-squares optimum, coefficient metrics and `train.gradient: gram` are for Polynomial only.
"""

import torch


class Polynomial(torch.nn.Module):
    """y = a + b x + c x^2 + ...: the seed's Linear(degree, 1), Flatten(0, 1) on x^1..x^degree."""

    def __init__(self, degree: int):
        super().__init__()
        self.degree = degree
        self.linear = torch.nn.Linear(degree, 1)
        self.flatten = torch.nn.Flatten(0, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) -> (N, degree): x^1 .. x^degree, as the seed's `x.unsqueeze(-1).pow(p)`."""
        powers = torch.arange(1, self.degree + 1, device=x.device)
        return x.unsqueeze(-1).pow(powers)

    def from_features(self, features: torch.Tensor) -> torch.Tensor:
        """(N, degree) -> (N,). Training computes the features once, as the seed does."""
        return self.flatten(self.linear(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) -> (N,)."""
        return self.from_features(self.features(x))

    def coefficients(self) -> torch.Tensor:
        """(degree + 1,) float64: the polynomial's a, b, c, ... in increasing power."""
        return torch.cat([self.linear.bias.detach(), self.linear.weight.detach()[0]]).double()

    def formula(self) -> str:
        """The seed's `y = a + b x + c x^2 + d x^3` line."""
        a, *rest = self.coefficients().tolist()
        powers = ["x"] + [f"x^{power}" for power in range(2, self.degree + 1)]
        terms = [f"{c} {power}" for c, power in zip(rest, powers, strict=True)]
        return "y = " + " + ".join([f"{a}", *terms])


def build_model(config: dict) -> torch.nn.Module:
    """The model params.model describes (its keys are the constructor's arguments)."""
    return Polynomial(**config)


FLOAT32_MAX = torch.finfo(torch.float32).max


def as_points(values) -> torch.Tensor:
    """x (a list or array) as the (N,) float32 tensor the model computes on, refusing what float32
    cannot hold (nan, inf, beyond 3.4e38): the prediction there would be nan, not an answer."""
    x = torch.tensor(values, dtype=torch.float64).reshape(-1)  # a copy: the input may be read-only
    unusable = x[~(x.abs() <= FLOAT32_MAX)]  # nan compares false too
    if len(unusable):
        raise ValueError(f"{unusable[0].item():g} is not a finite float32 number (|x| <= 3.4e38)")
    return x.float()


def predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Model output at the points x (N,) -> (N,), without tracking gradients."""
    with torch.no_grad():
        return model(x)


def design(x: torch.Tensor, degree: int) -> torch.Tensor:
    """(N,) -> (N, degree + 1): a column of ones (the bias), then x^1..x^degree, in x's dtype:
    the polynomial's design matrix, for least squares and gram's sums."""
    powers = torch.arange(1, degree + 1, device=x.device)
    return torch.cat([torch.ones_like(x).unsqueeze(-1), x.unsqueeze(-1).pow(powers)], dim=1)
