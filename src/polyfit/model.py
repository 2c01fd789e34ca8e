"""The polynomial model of the seed: features x^1..x^degree, Linear(degree, 1), Flatten(0, 1)."""

import torch


def features(x: torch.Tensor, degree: int) -> torch.Tensor:
    """(N,) -> (N, degree): the powers x^1 .. x^degree, as the seed's `x.unsqueeze(-1).pow(p)`."""
    powers = torch.arange(1, degree + 1, device=x.device)
    return x.unsqueeze(-1).pow(powers)


def design(x: torch.Tensor, degree: int) -> torch.Tensor:
    """(N,) -> (N, degree + 1): a column of ones (the bias), then the features, in x's dtype."""
    return torch.cat([torch.ones_like(x).unsqueeze(-1), features(x, degree)], dim=1)


def build_model(degree: int) -> torch.nn.Sequential:
    """Linear(degree, 1) then Flatten(0, 1): (N, degree) -> (N,)."""
    return torch.nn.Sequential(torch.nn.Linear(degree, 1), torch.nn.Flatten(0, 1))


def coefficients(model: torch.nn.Sequential) -> torch.Tensor:
    """(degree + 1,) float64: the polynomial's a, b, c, ... in increasing power."""
    linear = model[0]
    return torch.cat([linear.bias.detach(), linear.weight.detach()[0]]).double()


def predict(model: torch.nn.Sequential, x: torch.Tensor, degree: int) -> torch.Tensor:
    """Model output at the points x (N,) -> (N,), without tracking gradients."""
    with torch.no_grad():
        return model(features(x, degree))


def formula(coefs: torch.Tensor) -> str:
    """The seed's `y = a + b x + c x^2 + d x^3` line for any degree."""
    terms = [f"{coefs[0].item()}", f"{coefs[1].item()} x"] if len(coefs) > 1 else []
    terms += [f"{c.item()} x^{power}" for power, c in enumerate(coefs[2:], start=2)]
    return "y = " + " + ".join(terms)
