"""The seed's training loop for any torch.optim optimizer, with a loss history and divergence
checks."""

import math
from collections.abc import Callable

import torch

from polyfit.core.gram import gram_loss
from polyfit.errors import DivergedError

# The summed squared error at the current parameters, as a tensor autograd can differentiate.
LossFunction = Callable[[], torch.Tensor]


def build_optimizer(name: str, parameters, lr: float, options: dict) -> torch.optim.Optimizer:
    """torch.optim.<name>(parameters, lr=lr, **options), options as validated in params."""
    options = dict(options)
    if "beta1" in options:  # params spell Adam's betas as two scalars, for `dvc exp run -S`
        options["betas"] = (options.pop("beta1"), options.pop("beta2"))
    if options.get("line_search_fn") == "none":
        options["line_search_fn"] = None
    return getattr(torch.optim, name)(parameters, lr=lr, **options)


def make_loss(
    gradient: str, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor
) -> LossFunction:
    """The loss params.train.gradient names, over the points x (N,) and target (N,).

    autograd: the seed's forward pass over every sample and MSELoss(reduction="sum").
    gram: the same loss from sums over the data made once here (gram.py), for large data.
    """
    if gradient == "gram":
        return gram_loss(model, x, target)
    inputs = model.features(x)  # (N, degree): once, as the seed computes xx once
    loss_fn = torch.nn.MSELoss(reduction="sum")
    return lambda: loss_fn(model.from_features(inputs), target)


def fit(
    loss_function: LossFunction,
    optimizer: torch.optim.Optimizer,
    steps: int,
    log_every: int,
    divergence_factor: float,
    report: Callable[[int, float], None] = lambda step, loss: None,
) -> list[float]:
    """Minimise the loss; return the loss before each step. Stop at the first step whose loss
    diverges; report the loss every `log_every` steps and at the last.

    Each loss is read with .item() as it comes: on the CPU that costs nothing measurable, while
    keeping each step's loss tensor for later costs ~3% (benchmarks/training_loop.py). On a GPU,
    .item() would wait for the device every step.
    """

    def closure() -> torch.Tensor:  # LBFGS evaluates the loss several times a step
        optimizer.zero_grad()
        loss = loss_function()
        loss.backward()
        return loss

    losses = []
    for step in range(steps):
        if isinstance(optimizer, torch.optim.LBFGS):
            loss = optimizer.step(closure)
        else:
            optimizer.zero_grad()
            loss = loss_function()
            loss.backward()
            optimizer.step()
        losses.append(loss.item())
        _check_divergence(losses, divergence_factor)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            report(step, losses[-1])
    return losses


def _check_divergence(losses: list[float], factor: float) -> None:
    """Raise DivergedError if the newest loss is non-finite or over factor x the first."""
    step, loss = len(losses) - 1, losses[-1]
    if not math.isfinite(loss):
        cause = "train.lr too large?" if step else "data.x_*, noise_std or model.degree too large?"
        raise DivergedError(f"loss became non-finite at step {step} ({cause})")
    if loss > factor * losses[0]:
        raise DivergedError(
            f"loss grew to {loss:.4g} at step {step}, over {factor:g} x the first loss "
            f"{losses[0]:.4g} (train.divergence_factor)"
        )
