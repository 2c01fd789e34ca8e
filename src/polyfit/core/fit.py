"""The seed's training loop for any model and torch.optim optimizer: full batch or mini-batches,
on any device, with a loss history, divergence checks and a hook for checkpoints."""

import math
from collections.abc import Callable, Iterator

import torch

from polyfit.errors import DivergedError

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]  # (X (B, F), y (B,)) for each step


def build_optimizer(name: str, parameters, lr: float, options: dict) -> torch.optim.Optimizer:
    """torch.optim.<name>(parameters, lr=lr, **options), options as validated in params."""
    options = dict(options)
    if "beta1" in options:  # params spell Adam's betas as two scalars, for `dvc exp run -S`
        options["betas"] = (options.pop("beta1"), options.pop("beta2"))
    if options.get("line_search_fn") == "none":
        options["line_search_fn"] = None
    return getattr(torch.optim, name)(parameters, lr=lr, **options)


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Batches,
    steps: int,
    log_every: int,
    divergence_factor: float,
    loss_function: Callable | None = None,
    losses: list[float] | None = None,
    report: Callable[[int, float], None] = lambda step, loss: None,
    checkpoint_every: int | None = None,
    checkpoint: Callable[[list[float]], None] = lambda losses: None,
) -> list[float]:
    """Train to `steps`, from the step after the given losses (a resumed history); return the
    loss before each step. The loss is the seed's summed squared error unless loss_function
    (model, X, y) gives another.

    The losses stay on the device until every log_every steps, when they are read back in one
    wait: then divergence is checked and the last one reported. checkpoint(losses) is called
    every checkpoint_every steps before the last, with the history up to then.
    """
    losses = list(losses or [])
    loss_function = loss_function or summed_squared_error
    pending = []  # this stretch's losses, not yet read back from the device
    for step in range(len(losses), steps):
        X, y = next(batches)
        if isinstance(optimizer, torch.optim.LBFGS):  # it evaluates the loss several times a step
            loss = optimizer.step(closure(loss_function, model, optimizer, X, y))
        else:
            loss = loss_function(model, X, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        pending.append(loss.detach())
        done = step + 1
        at_checkpoint = checkpoint_every and done % checkpoint_every == 0 and done < steps
        if done % log_every == 0 or done == steps or at_checkpoint:
            read = len(losses)
            losses += torch.stack(pending).tolist()
            pending = []
            check_divergence(losses, divergence_factor, since=read)
            if done % log_every == 0 or done == steps:
                report(step, losses[-1])
            if at_checkpoint:
                checkpoint(losses)
    return losses


def summed_squared_error(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor):
    """The seed's loss: MSELoss(reduction="sum") of model(X) against y."""
    return torch.nn.functional.mse_loss(model(X), y, reduction="sum")


def closure(loss_function: Callable, model, optimizer, X, y) -> Callable[[], torch.Tensor]:
    """The loss at the current parameters, with its gradients: what LBFGS's step asks for."""

    def evaluate() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_function(model, X, y)
        loss.backward()
        return loss

    return evaluate


def check_divergence(losses: list[float], factor: float, since: int = 0) -> None:
    """Raise DivergedError at the first loss from `since` on that is non-finite or over factor x
    the first loss."""
    for step in range(max(since, 0), len(losses)):
        loss = losses[step]
        if not math.isfinite(loss):
            cause = "train.lr too large?" if step else "the data or the model's output too large?"
            raise DivergedError(f"loss became non-finite at step {step} ({cause})")
        if loss > factor * losses[0]:
            raise DivergedError(
                f"loss grew to {loss:.4g} at step {step}, over {factor:g} x the first loss "
                f"{losses[0]:.4g} (train.divergence_factor)"
            )
