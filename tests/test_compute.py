"""The pure computation against references: the seed's own code, torch.optim, numpy.polyfit."""

import math

import numpy as np
import pytest
import torch
from conftest import default_params

from polyfit.data import make_dataset
from polyfit.errors import DivergedError
from polyfit.files import tensors_to_bytes
from polyfit.fit import build_optimizer, fit, make_loss
from polyfit.model import build_model, coefficients, features, formula
from polyfit.params import OPTIMIZERS, validate_params
from polyfit.scoring import least_squares, polynomial, score

PARAMS = validate_params(default_params())
SIN = {
    "target": "sin",
    "x_min": -math.pi,
    "x_max": math.pi,
    "n_samples": 2000,
    "noise_std": 0.0,
    "seed": 0,
}


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
    return torch.tensor(losses), model


def our_fit(optimizer: str = "RMSprop", lr: float = 1e-3, steps: int = 2000, degree: int = 3):
    x, y = make_dataset(**SIN)
    torch.manual_seed(0)
    model = build_model(degree)
    options = getattr(PARAMS.train.options, optimizer).model_dump()
    opt = build_optimizer(optimizer, model.parameters(), lr, options)
    history = fit(make_loss("autograd", model, x, y, degree), opt, steps, 100, 1e3)
    return history, model, x, y


def test_dataset_is_the_seeds():
    x, y = make_dataset(**SIN)
    assert torch.equal(x, torch.linspace(-math.pi, math.pi, 2000))
    assert torch.equal(y, torch.sin(x))


def test_noise_is_seeded_and_same_params_give_identical_bytes():
    noisy = SIN | {"noise_std": 0.1, "seed": 7}
    first, second = make_dataset(**noisy), make_dataset(**noisy)
    assert tensors_to_bytes(dict(x=first[0], y=first[1])) == tensors_to_bytes(
        dict(x=second[0], y=second[1])
    )
    other = make_dataset(**noisy | {"seed": 8})[1]
    assert not torch.equal(first[1], other)
    assert 0.05 < (first[1] - torch.sin(first[0])).std().item() < 0.15


def test_features_are_the_seeds_powers():
    x = torch.linspace(-1, 1, 5)
    assert torch.equal(features(x, 3), x.unsqueeze(-1).pow(torch.tensor([1, 2, 3])))
    assert features(x, 5).shape == (5, 5)


def test_training_reproduces_the_seed_loop_step_for_step():
    expected, seed_model = seed_loop(2000)
    history, model, _, _ = our_fit()
    assert torch.equal(history, expected)
    assert torch.equal(model[0].weight, seed_model[0].weight)
    assert history[-1].item() == pytest.approx(8.9, abs=0.1)  # the seed's printed final loss


def test_coefficients_reach_the_least_squares_optimum():
    _, model, x, y = our_fit()
    optimum = least_squares(x, y, 3)
    assert optimum.tolist() == pytest.approx([0, 0.857, 0, -0.0933], abs=1e-3)
    assert (coefficients(model) - optimum).abs().max().item() < 1e-2


def test_least_squares_agrees_with_numpy_polyfit():
    x, y = make_dataset(**SIN | {"target": "exp", "n_samples": 300})
    reference = np.polynomial.polynomial.polyfit(x.double().numpy(), y.double().numpy(), 4)
    assert least_squares(x, y, 4).numpy() == pytest.approx(reference, rel=1e-8, abs=1e-10)


def test_score_of_the_optimum_itself_has_no_gap():
    x, y = make_dataset(**SIN)
    optimum = least_squares(x, y, 3)
    model = build_model(3).double()
    with torch.no_grad():
        model[0].bias.copy_(optimum[:1])
        model[0].weight.copy_(optimum[1:].unsqueeze(0))
    grid = torch.linspace(-math.pi, math.pi, 5000).double()
    metrics = score(model, x.double(), y.double(), grid, torch.sin(grid), 3)
    assert abs(metrics["gap_to_optimum"]) < 1e-9
    assert metrics["coef_distance"] < 1e-12
    assert metrics["train_set"]["rmse"] == pytest.approx(math.sqrt(metrics["train_set"]["mse"]))
    assert metrics["grid"]["mse"] == pytest.approx(metrics["optimum"]["grid_mse"], rel=1e-9)


def test_polynomial_evaluates_coefficients_in_increasing_power():
    coefs = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert polynomial(coefs, torch.tensor([2.0])).item() == 1 + 2 * 2 + 3 * 4


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_from_params_as_torch_optim(name):
    options = getattr(PARAMS.train.options, name).model_dump()
    model = build_model(3)
    optimizer = build_optimizer(name, model.parameters(), 0.01, options)
    assert type(optimizer) is getattr(torch.optim, name)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.01
    if "beta1" in options:
        assert group["betas"] == (options["beta1"], options["beta2"])


@pytest.mark.parametrize(("name", "lr"), [("SGD", 1e-6), ("Adam", 1e-2), ("LBFGS", 1.0)])
def test_other_optimizers_converge(name, lr):
    history, model, x, y = our_fit(name, lr, steps=2000 if name != "LBFGS" else 50)
    assert history[-1].item() < 8.95
    assert (coefficients(model) - least_squares(x, y, 3)).abs().max().item() < 1e-2


def test_divergence_is_detected_without_a_model():
    with pytest.raises(DivergedError, match=r"non-finite|grew"):
        our_fit("SGD", 1e-3, steps=500)


def test_growth_beyond_the_factor_is_divergence():
    x, y = make_dataset(**SIN)
    torch.manual_seed(0)
    model = build_model(3)
    # Largest curvature of the summed loss is ~5.5e5, so plain SGD is unstable above ~3.6e-6
    # and grows ~1.2x per step at 4e-6: checked every step, it is caught while still finite.
    optimizer = torch.optim.SGD(model.parameters(), lr=4e-6)
    with pytest.raises(DivergedError, match="divergence_factor"):
        fit(make_loss("autograd", model, x, y, 3), optimizer, 2000, 1, 10.0)


def test_formula_matches_the_seed_line():
    coefs = torch.tensor([0.5, 1.0, -2.0, 0.25])
    assert formula(coefs) == "y = 0.5 + 1.0 x + -2.0 x^2 + 0.25 x^3"
