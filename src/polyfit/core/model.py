"""The model: the seed's y = a + b x + c x^2 + d x^3, for any number of feature columns.

This file is logged with every trained model and loaded from that copy (tracking/serving.py),
so a model version keeps working after the code here changes. It imports torch only.

To fit another model (docs/adapting.md), write its class here and make build_model return it:
any torch.nn.Module whose forward maps X (N, F) float32 to y (N,), with a state_dict of float32
tensors (models/model.pt is loaded with weights_only=True).
"""

import torch


class Polynomial(torch.nn.Module):
    """Every feature to the powers 1..degree, then the seed's Linear and Flatten(0, 1)."""

    def __init__(self, n_features: int, degree: int):
        super().__init__()
        self.degree = degree
        self.register_buffer("exponents", torch.arange(1, degree + 1), persistent=False)
        self.linear = torch.nn.Linear(n_features * degree, 1)
        self.flatten = torch.nn.Flatten(0, 1)
        self._powers_of = None  # (an input X, its powers)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """(N, F) -> (N,)."""
        return self.flatten(self.linear(self.powers(X)))

    def powers(self, X: torch.Tensor) -> torch.Tensor:
        """(N, F) -> (N, F * degree): x1, x1^2, ..., x1^degree, x2, ..., as the seed's
        `x.unsqueeze(-1).pow(p)` for one feature. Full-batch training passes the same X at
        every step, so the powers of the last X are kept (for that tensor object, as long as
        the model lives; change X in place and they would be stale): the seed computes them
        once, and computing them again every step slows it measurably (BENCHMARKS.md)."""
        if self._powers_of is None or self._powers_of[0] is not X:
            self._powers_of = (X, X.unsqueeze(-1).pow(self.exponents).flatten(1))
        return self._powers_of[1]

    def coefficients(self) -> torch.Tensor:
        """(1 + F * degree,) float64: the bias, then the weight of each power, as powers() orders
        them."""
        return torch.cat([self.linear.bias.detach(), self.linear.weight.detach()[0]]).double()

    def __str__(self) -> str:
        """The seed's `y = a + b x + c x^2 + d x^3` (x1, x2, ... for several features)."""
        bias, *weights = self.coefficients().tolist()
        n_features = len(weights) // self.degree
        names = ["x"] if n_features == 1 else [f"x{i}" for i in range(1, n_features + 1)]
        powers = [
            f"{name}^{p}" if p > 1 else name for name in names for p in range(1, self.degree + 1)
        ]
        return "y = " + " + ".join(
            [f"{bias}", *(f"{w} {t}" for w, t in zip(weights, powers, strict=True))]
        )


def build_model(config: dict, n_features: int) -> torch.nn.Module:
    """The model params.model describes (its keys are the constructor's arguments) for a table
    of n_features columns."""
    return Polynomial(n_features, **config)
