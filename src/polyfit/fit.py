"""The seed's training loop for any torch.optim optimizer, with a loss history and divergence
checks."""

from collections.abc import Callable

import torch

from polyfit.errors import DivergedError
from polyfit.gram import gram_loss
from polyfit.model import features

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
    gradient: str, model: torch.nn.Sequential, x: torch.Tensor, target: torch.Tensor, degree: int
) -> LossFunction:
    """The loss params.train.gradient names, over the points x (N,) and target (N,).

    autograd: the seed's forward pass over every sample and MSELoss(reduction="sum").
    gram: the same loss from sums over the data made once here (gram.py), for large data.
    """
    if gradient == "gram":
        return gram_loss(model, x, target, degree)
    inputs = features(x, degree)  # (N, degree)
    loss_fn = torch.nn.MSELoss(reduction="sum")
    return lambda: loss_fn(model(inputs), target)


def fit(
    loss_function: LossFunction,
    optimizer: torch.optim.Optimizer,
    steps: int,
    log_every: int,
    divergence_factor: float,
    report: Callable[[int, float], None] = lambda step, loss: None,
) -> torch.Tensor:
    """Minimise the loss; return the loss before each step, (steps,).

    Losses stay tensors (no .item() per step) until every `log_every` steps, where they are
    reported and checked for divergence, so the loop costs what the seed's loop costs.
    """

    def closure() -> torch.Tensor:  # LBFGS evaluates the loss several times a step
        optimizer.zero_grad()
        loss = loss_function()
        loss.backward()
        return loss

    loss_history, window, checked = None, [], 0  # window: the losses since the last check
    for step in range(steps):
        if isinstance(optimizer, torch.optim.LBFGS):
            loss = optimizer.step(closure)
        else:
            optimizer.zero_grad()
            loss = loss_function()
            loss.backward()
            optimizer.step()
        window.append(loss.detach())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            losses = torch.stack(window)
            if loss_history is None:  # one (steps,) tensor: 0-d tensors would cost ~100x more
                loss_history = torch.empty(steps, dtype=losses.dtype)
            loss_history[checked : step + 1] = losses
            _check_divergence(losses, checked, loss_history[0].item(), divergence_factor)
            window, checked = [], step + 1
            report(step, losses[-1].item())
    return loss_history


def _check_divergence(losses: torch.Tensor, start: int, first: float, factor: float) -> None:
    """Raise DivergedError if a loss of steps start.. is non-finite or > factor x the first."""
    if not torch.isfinite(losses).all():
        step = start + int((~torch.isfinite(losses)).nonzero()[0])
        cause = "train.lr too large?" if step else "data.x_*, noise_std or model.degree too large?"
        raise DivergedError(f"loss became non-finite at step {step} ({cause})")
    worst = losses.max().item()
    if worst > factor * first:
        step = start + int(losses.argmax())
        raise DivergedError(
            f"loss grew to {worst:.4g} at step {step}, over {factor:g} x the first loss "
            f"{first:.4g} (train.divergence_factor)"
        )
