"""The training loop of the seed, for any torch.optim optimizer, with divergence checks."""

from collections.abc import Callable

import torch

from polyfit.errors import DivergedError


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
    features: torch.Tensor,
    target: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    steps: int,
    log_every: int,
    divergence_factor: float,
    report: Callable[[int, float], None] = lambda step, loss: None,
) -> torch.Tensor:
    """Minimise the summed squared error; return the loss before each step, (steps,).

    The loss stays on the tensor side (no .item()) except every `log_every` steps, where it is
    reported and checked for divergence, so the loop costs what the seed's loop costs.
    """

    def closure():  # LBFGS re-evaluates it; the others call it once
        optimizer.zero_grad()
        # The seed's MSELoss(reduction="sum") without the module call: 1.5 us less per step.
        loss = torch.nn.functional.mse_loss(model(features), target, reduction="sum")
        loss.backward()
        return loss

    loss_history = torch.empty(steps)
    checked = 0
    for step in range(steps):
        loss_history[step] = optimizer.step(closure).detach()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            _check_divergence(loss_history, checked, step + 1, divergence_factor)
            checked = step + 1
            report(step, loss_history[step].item())
    return loss_history


def _check_divergence(loss_history: torch.Tensor, start: int, end: int, factor: float) -> None:
    """Raise DivergedError if any loss in [start, end) is non-finite or > factor x the first."""
    window = loss_history[start:end]
    if not torch.isfinite(window).all():
        step = start + int((~torch.isfinite(window)).nonzero()[0])
        raise DivergedError(f"loss became non-finite at step {step}")
    worst = window.max().item()
    if worst > factor * loss_history[0].item():
        step = start + int(window.argmax())
        raise DivergedError(
            f"loss grew to {worst:.4g} at step {step}, over {factor:g} x the first loss "
            f"{loss_history[0].item():.4g} (train.divergence_factor)"
        )
