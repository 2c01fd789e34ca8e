"""The tutorial's script, reproduced: the same data, the same powers, the same loss at every
step and the same weights, and its printed line."""

import math

import pytest
import torch
from tutorial import seed_loop, seed_settings_fit, sin_tables

from polyfit import files
from polyfit.core.model import Polynomial, build_model


def test_the_training_table_is_the_seeds_x_and_sin():
    train, _ = sin_tables()
    assert train.features == ("x",)
    assert torch.equal(train.X[:, 0], torch.linspace(-math.pi, math.pi, 2000))
    assert torch.equal(train.y, torch.sin(train.X[:, 0]))


def test_the_held_out_table_is_the_noise_free_function_on_a_dense_grid():
    _, held_out = sin_tables(noise_std=0.5, held_out_points=10000)
    grid = torch.linspace(-math.pi, math.pi, 10000)
    assert torch.equal(held_out.X[:, 0], grid)
    assert torch.equal(held_out.y, torch.sin(grid.double()).float())  # no noise


def test_noise_is_seeded_and_same_params_give_identical_bytes():
    noisy = {"noise_std": 0.1, "seed": 7}
    first, second = sin_tables(**noisy)[0], sin_tables(**noisy)[0]
    assert files.table_bytes(first) == files.table_bytes(second)
    assert not torch.equal(first.y, sin_tables(**noisy | {"seed": 8})[0].y)
    assert 0.05 < (first.y - torch.sin(first.X[:, 0])).std().item() < 0.15


def test_the_powers_are_the_seeds_xx_bit_for_bit():
    x = torch.linspace(-math.pi, math.pi, 2000)
    seeds = x.unsqueeze(-1).pow(torch.tensor([1, 2, 3]))
    assert torch.equal(Polynomial(1, 3).powers(x.unsqueeze(-1)), seeds)


def test_the_powers_of_several_features_are_each_features_in_turn():
    X = torch.tensor([[2.0, 3.0]])
    assert Polynomial(2, 2).powers(X).tolist() == [[2.0, 4.0, 3.0, 9.0]]


def test_the_model_is_the_seeds_linear_and_flatten():
    model = build_model({"degree": 3}, 1)
    assert model.linear.weight.shape == (1, 3)
    assert isinstance(model.flatten, torch.nn.Flatten)


def test_training_reproduces_the_seed_loop_step_for_step():
    expected, seed_model = seed_loop(2000)
    losses, model, _ = seed_settings_fit()
    assert losses == expected  # every loss, as the same float
    assert torch.equal(model.linear.weight, seed_model[0].weight)
    assert torch.equal(model.linear.bias, seed_model[0].bias)
    # The seed's "about 8.9". The exact endpoint is the CPU's (docs/determinism.md);
    # step-for-step equality with the seed above is what holds everywhere.
    assert losses[-1] == pytest.approx(8.9, abs=0.05)


def test_the_result_line_is_the_seeds():
    model = Polynomial(1, 3)
    with torch.no_grad():
        model.linear.bias.fill_(0.5)
        model.linear.weight.copy_(torch.tensor([[1.0, -2.0, 0.25]]))
    assert str(model) == "y = 0.5 + 1.0 x + -2.0 x^2 + 0.25 x^3"


def test_the_result_line_of_several_features_names_each():
    model = Polynomial(2, 1)
    with torch.no_grad():
        model.linear.bias.fill_(1.0)
        model.linear.weight.copy_(torch.tensor([[2.0, 3.0]]))
    assert str(model) == "y = 1.0 + 2.0 x1 + 3.0 x2"
