"""The tutorial's reference: the least-squares polynomial of the model's family, which evaluate
scores the model against (gap_to_optimum, coef_*), checked against NumPy alone."""

import numpy as np
import pytest
import torch
from tutorial import PARAMS, numpy_optimum, our_fit, seed_settings_fit, sin_tables

from polyfit.core.model import Polynomial
from polyfit.core.scoring import least_squares, score
from polyfit.params import flatten


def test_coefficients_reach_the_least_squares_optimum_as_the_readme_says():
    _, model, train = seed_settings_fit()
    optimum = numpy_optimum(train.X[:, 0], train.y, 3)
    # "(0, 0.857, 0, -0.0933)", each to half a unit of its last stated digit
    stated, half_digit = np.array([0, 0.857, 0, -0.0933]), np.array([5e-4, 5e-4, 5e-4, 5e-5])
    assert np.all(np.abs(optimum - stated) <= half_digit), optimum
    # "the coefficients are within 1e-3 of the least-squares optimum"
    assert np.abs(model.coefficients().numpy() - optimum).max() < 1e-3


def test_least_squares_agrees_with_numpy_polyfit():
    train, _ = sin_tables(target="exp", n_samples=300)
    reference = np.polynomial.polynomial.polyfit(
        train.X[:, 0].double().numpy(), train.y.double().numpy(), 4
    )
    assert least_squares(Polynomial(1, 4), train).numpy() == pytest.approx(
        reference, rel=1e-8, abs=1e-10
    )


def test_score_of_the_optimum_itself_has_no_gap():
    train, held_out = sin_tables()
    model = Polynomial(1, 3).double()
    optimum = least_squares(model, train)
    with torch.no_grad():
        model.linear.bias.copy_(optimum[:1])
        model.linear.weight.copy_(optimum[1:].unsqueeze(0))
    metrics = score(
        model, train._replace(X=train.X.double()), held_out._replace(X=held_out.X.double())
    )
    assert abs(metrics["gap_to_optimum"]) < 1e-9
    assert metrics["coef_distance"] < 1e-12
    assert metrics["held_out"]["mse"] == pytest.approx(metrics["optimum"]["held_out_mse"], rel=1e-9)


def test_every_metric_matches_an_independent_float64_computation():
    """score() against NumPy: the model's own polynomial (a float64 copy, so both sides compute
    in float64) against the training and the held-out rows, and NumPy's least-squares optimum."""
    _, trained, _ = our_fit(steps=1500)  # still short of the optimum: every gap is nonzero
    train, held_out = sin_tables()
    model = trained.double()
    metrics = flatten(
        score(model, train._replace(X=train.X.double()), held_out._replace(X=held_out.X.double()))
    )
    coefs = model.coefficients().numpy()  # a, b, c, d
    optimum = numpy_optimum(train.X[:, 0], train.y, 3)
    xs, ys = train.X[:, 0].double().numpy(), train.y.double().numpy()
    gx, gy = held_out.X[:, 0].double().numpy(), held_out.y.double().numpy()

    def cubic(c, t):
        return c[0] + c[1] * t + c[2] * t**2 + c[3] * t**3

    def mse(prediction, truth):
        return np.mean((prediction - truth) ** 2)

    train_mse, optimum_mse = mse(cubic(coefs, xs), ys), mse(cubic(optimum, xs), ys)
    expected = {
        "train_set.mse": train_mse,
        "train_set.rmse": np.sqrt(train_mse),
        "train_set.max_abs_error": np.max(np.abs(cubic(coefs, xs) - ys)),
        "held_out.mse": mse(cubic(coefs, gx), gy),
        "held_out.rmse": np.sqrt(mse(cubic(coefs, gx), gy)),
        "held_out.max_abs_error": np.max(np.abs(cubic(coefs, gx) - gy)),
        "optimum.train_set_mse": optimum_mse,
        "optimum.held_out_mse": mse(cubic(optimum, gx), gy),
        "gap_to_optimum": (train_mse - optimum_mse) / optimum_mse,
        "coef_distance": np.linalg.norm(coefs - optimum),
        "coef_max_abs_diff": np.max(np.abs(coefs - optimum)),
    }
    assert sorted(metrics) == sorted(expected)
    assert expected["gap_to_optimum"] > 1e-3 and expected["coef_max_abs_diff"] > 1e-3
    for name, value in expected.items():  # float64 throughout: agreement to ~1e-9 relative
        assert metrics[name] == pytest.approx(value, rel=1e-9), name


@pytest.mark.parametrize(("name", "lr"), [("SGD", 1e-6), ("Adam", 1e-2), ("LBFGS", 1.0)])
def test_other_optimizers_converge(name, lr):
    """They reach the least-squares optimum: its loss to float32 rounding, its coefficients."""
    losses, model, train = our_fit(name, lr, steps=2000 if name != "LBFGS" else 50)
    x, y = train.X[:, 0], train.y
    optimum = numpy_optimum(x, y, 3)
    residual = np.vander(x.double().numpy(), 4, increasing=True) @ optimum - y.double().numpy()
    optimum_loss = np.square(residual).sum()  # 8.817: no cubic does better
    # A float32 sum of 2000 squares is off by up to ~log2(2000) * 6e-8 = 7e-7 relative, so the
    # bound is 1e-6 either side: not below the optimum, and not above.
    assert losses[-1] == pytest.approx(optimum_loss, rel=1e-6)
    # The optimum to 1e-4, 10x the README's 1e-3 for RMSprop, which still circles it at 2000.
    assert np.abs(model.coefficients().numpy() - optimum).max() < 1e-4


def test_the_optimizers_settings_are_the_params():
    assert PARAMS.train.optimizer == "RMSprop" and PARAMS.train.lr == 1e-3
