"""train.gradient = gram: the seed's loss and gradient from sufficient statistics, checked
against autograd on the same float32 features, in float64 and through the train stage."""

import json
import math

import pytest
import torch
from conftest import default_params, runs_of, write_params

from polyfit import paths
from polyfit.core.data import make_dataset
from polyfit.core.fit import build_optimizer, fit, make_loss
from polyfit.core.gram import gram_loss, statistics
from polyfit.core.model import Polynomial
from polyfit.core.scoring import least_squares
from polyfit.stages import generate, train


def noisy_data(n: int = 1000):
    return make_dataset("exp", -1.5, 2.0, n, 0.3, 3)


def parameters_and_grads(model) -> list[torch.Tensor]:
    linear = model.linear
    return [linear.bias.detach(), linear.weight.detach(), linear.bias.grad, linear.weight.grad]


@pytest.mark.parametrize("degree", [1, 3, 5])
def test_loss_and_gradient_equal_autograds_in_float64(degree):
    x, y = noisy_data()
    torch.manual_seed(degree)
    model = Polynomial(degree).double()
    with torch.no_grad():  # move off the initial weights so every term of G, c, s matters
        model.linear.weight.mul_(3)
    # The seed's loss on the same float32 features, widened: what gram sums.
    reference_loss = torch.nn.MSELoss(reduction="sum")(
        model.from_features(model.features(x).double()), y.double()
    )
    reference_loss.backward()
    expected = [tensor.clone() for tensor in parameters_and_grads(model)]
    model.zero_grad()
    loss = gram_loss(model, x, y)()
    loss.backward()
    assert loss.item() == pytest.approx(reference_loss.item(), rel=1e-12)
    for got, want in zip(parameters_and_grads(model)[2:], expected[2:], strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-10)


def test_statistics_do_not_depend_on_the_chunking():
    x, y = noisy_data(1003)
    whole = statistics(x, y, 3, chunk_rows=len(x))
    chunked = statistics(x, y, 3, chunk_rows=7)  # 143 full chunks and a partial one
    for a, b in zip(whole, chunked, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=0)
    gram, cross, total = whole
    design = torch.cat([torch.ones(len(x), 1), Polynomial(3).features(x)], dim=1).double()
    assert torch.allclose(gram, design.T @ design, rtol=1e-12)
    assert torch.allclose(cross, design.T @ y.double(), rtol=1e-12)
    assert total.item() == pytest.approx((y.double() ** 2).sum().item(), rel=1e-12)


def train_both(optimizer: str, lr: float, steps: int, options: dict):
    """(autograd history, gram history, autograd model, gram model) on the seed's data."""
    x, y = make_dataset("sin", -math.pi, math.pi, 2000, 0.0, 0)
    results = []
    for kind in ("autograd", "gram"):
        torch.manual_seed(0)
        model = Polynomial(3)
        opt = build_optimizer(optimizer, model.parameters(), lr, options)
        history = fit(make_loss(kind, model, x, y), opt, steps, 100, 1e3)
        results.append((torch.tensor(history, dtype=torch.float64), model))
    (auto_history, auto_model), (gram_history, gram_model) = results
    return auto_history, gram_history, auto_model, gram_model, least_squares(x, y, 3)


def test_rmsprop_follows_the_same_path_as_autograd():
    options = default_params()["train"]["options"]["RMSprop"]
    auto, gram, auto_model, gram_model, optimum = train_both("RMSprop", 1e-3, 2000, options)
    # Each history keeps its loss's precision: autograd's float32, gram's float64.
    assert torch.equal(auto.float().double(), auto)
    assert not torch.equal(gram.float().double(), gram)
    # The same path to float32 rounding while the loss falls (the README: 1.7e-6 at most) ...
    assert torch.allclose(gram[:1000], auto[:1000].double(), rtol=1.7e-6, atol=0)
    # ... then RMSprop circles the optimum at lr 1e-3 and the two circle out of phase.
    assert gram[-1].item() == pytest.approx(auto[-1].item(), rel=0.01)
    for model in (auto_model, gram_model):
        assert (model.coefficients() - optimum).abs().max().item() < 1e-3


def test_lbfgs_reaches_the_least_squares_optimum():
    options = default_params()["train"]["options"]["LBFGS"]
    _, gram, _, gram_model, optimum = train_both("LBFGS", 1.0, 20, options)
    assert (gram_model.coefficients() - optimum).abs().max().item() < 1e-5
    assert gram[-1].item() == pytest.approx(gram.min().item())


def test_an_exact_fit_never_reports_a_negative_loss():
    x = torch.linspace(-2, 2, 4001)
    y = 0.5 - x + 0.25 * x**3  # a cubic: the optimum's loss is zero up to rounding
    model = Polynomial(3)
    with torch.no_grad():
        model.linear.bias.fill_(0.5)
        model.linear.weight.copy_(torch.tensor([[-1.0, 0.0, 0.25]]))
    loss = gram_loss(model, x, y)()
    assert 0.0 <= loss.item() < 1e-6


@pytest.mark.slow  # runs generate, then train twice, at the default 2000 steps
def test_train_stage_with_gram_logs_it_and_lands_beside_autograd(stage_dir):
    params = default_params()  # 2000 steps: the loss has reached RMSprop's circling
    write_params(stage_dir, params)
    generate.main()
    train.main()
    autograd_loss = json.loads(paths.TRAIN_METRICS.read_text())["final_loss"]
    params["train"]["gradient"] = "gram"
    write_params(stage_dir, params)
    train.main()
    gram_final = json.loads(paths.TRAIN_METRICS.read_text())["final_loss"]
    assert gram_final == pytest.approx(autograd_loss, rel=0.01)  # see the RMSprop test above
    runs = runs_of(f"sqlite:///{stage_dir / 'mlflow.db'}", stage="train")
    assert sorted(run.data.params["train.gradient"] for run in runs) == ["autograd", "gram"]
