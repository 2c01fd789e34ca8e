"""The training loop of the seed, for any torch.optim optimizer, with divergence checks."""

from collections.abc import Callable

import torch

from polyfit.errors import DivergedError
from polyfit.model import features

# The summed squared error at the current parameters, detached, with every parameter's .grad set.
Objective = Callable[[], torch.Tensor]


def build_optimizer(name: str, parameters, lr: float, options: dict) -> torch.optim.Optimizer:
    """torch.optim.<name>(parameters, lr=lr, **options), options as validated in params."""
    options = dict(options)
    if "beta1" in options:  # params spell Adam's betas as two scalars, for `dvc exp run -S`
        options["betas"] = (options.pop("beta1"), options.pop("beta2"))
    if options.get("line_search_fn") == "none":
        options["line_search_fn"] = None
    return getattr(torch.optim, name)(parameters, lr=lr, **options)


def autograd_objective(
    model: torch.nn.Module, features: torch.Tensor, target: torch.Tensor
) -> Objective:
    """The seed's step: forward over every sample, MSELoss(reduction="sum"), backward."""
    parameters = list(model.parameters())

    def objective() -> torch.Tensor:
        # What optimizer.zero_grad() does, without its profiler record and torch._dynamo
        # wrapper (6 us a call, 4% of a step at n=2000).
        for parameter in parameters:
            parameter.grad = None
        # The seed's MSELoss module, called as a function: 1.5 us less per step.
        loss = torch.nn.functional.mse_loss(model(features), target, reduction="sum")
        loss.backward()
        return loss.detach()

    return objective


def make_objective(
    gradient: str, model: torch.nn.Sequential, x: torch.Tensor, target: torch.Tensor, degree: int
) -> Objective:
    """The objective params.train.gradient names, over the points x (N,) and target (N,)."""
    if gradient == "gram":
        from polyfit.gram import gram_objective  # it imports this module

        return gram_objective(model, x, target, degree)  # one pass over the data, here
    return autograd_objective(model, features(x, degree), target)  # (N, degree) inputs


def fit(
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    steps: int,
    log_every: int,
    divergence_factor: float,
    report: Callable[[int, float], None] = lambda step, loss: None,
) -> torch.Tensor:
    """Minimise the objective; return the loss before each step, (steps,).

    The loss stays on the tensor side (no .item()) except every `log_every` steps, where it is
    reported and checked for divergence, so the loop costs no more than the seed's loop.
    """
    # LBFGS evaluates the objective itself, several times a step. The others get it evaluated
    # here: optimizer.step(closure) would cost 8 us more a step (its enable_grad context).
    reevaluates = isinstance(optimizer, torch.optim.LBFGS)
    # One (steps,) tensor for the history, filled at each check: 0-d tensors cost ~100x more.
    loss_history, window, checked = None, [], 0  # window: the losses since the last check
    for step in range(steps):
        if reevaluates:
            window.append(optimizer.step(objective))
        else:
            window.append(objective())
            optimizer.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            losses = torch.stack(window)
            if loss_history is None:  # the objective's dtype: float32, or float64 for gram
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
