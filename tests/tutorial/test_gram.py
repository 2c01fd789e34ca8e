"""train.gradient = gram: the seed's loss and gradient from sufficient statistics, checked
against autograd on the same float32 powers, in float64 and through the train stage."""

import json

import pytest
import torch
from conftest import default_params, runs_of, write_params
from tutorial import PARAMS, sin_tables

from polyfit import paths
from polyfit.core.batches import full_batch
from polyfit.core.fit import build_optimizer, fit
from polyfit.core.gram import design, gram_loss, statistics
from polyfit.core.model import Polynomial
from polyfit.core.scoring import least_squares
from polyfit.stages import generate, train


def noisy_table(n: int = 1000):
    return sin_tables(target="exp", x_min=-1.5, x_max=2.0, n_samples=n, noise_std=0.3, seed=3)[0]


def grads(model) -> list[torch.Tensor]:
    return [model.linear.bias.grad, model.linear.weight.grad]


@pytest.mark.parametrize(("features", "degree"), [(1, 1), (1, 3), (1, 5), (2, 3)])
def test_loss_and_gradient_equal_autograds_in_float64(features, degree):
    table = noisy_table()
    X = table.X.repeat(1, features) * torch.arange(1, features + 1)  # F columns, each different
    torch.manual_seed(degree)
    model = Polynomial(features, degree).double()
    with torch.no_grad():  # move off the initial weights so every term of G, c, s matters
        model.linear.weight.mul_(3)
    # The seed's loss on the same float32 powers, widened: what gram sums.
    prediction = model.flatten(model.linear(model.powers(X).double()))
    reference = torch.nn.functional.mse_loss(prediction, table.y.double(), reduction="sum")
    reference.backward()
    expected = [grad.clone() for grad in grads(model)]
    model.zero_grad()
    loss = gram_loss(model, X, table.y)(model, X, table.y)
    loss.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-12)
    for got, want in zip(grads(model), expected, strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-10)


def test_statistics_do_not_depend_on_the_chunking():
    table = noisy_table(1003)
    model = Polynomial(1, 3)
    whole = statistics(model, table.X, table.y, chunk_rows=len(table.y))
    chunked = statistics(model, table.X, table.y, chunk_rows=7)  # 143 chunks and a partial one
    for a, b in zip(whole, chunked, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=0)
    gram, cross, total = whole
    matrix = design(model, table.X)
    assert torch.allclose(gram, matrix.T @ matrix, rtol=1e-12)
    assert torch.allclose(cross, matrix.T @ table.y.double(), rtol=1e-12)
    assert total.item() == pytest.approx((table.y.double() ** 2).sum().item(), rel=1e-12)


def train_both(optimizer: str, lr: float, steps: int):
    """(autograd losses, gram losses, autograd model, gram model, optimum) on the seed's data."""
    table, _ = sin_tables()
    options = getattr(PARAMS.train.options, optimizer).model_dump()
    results = []
    for kind in ("autograd", "gram"):
        torch.manual_seed(0)
        model = Polynomial(1, 3)
        opt = build_optimizer(optimizer, model.parameters(), lr, options)
        loss = gram_loss(model, table.X, table.y) if kind == "gram" else None
        losses = fit(model, opt, full_batch(table.X, table.y), steps, 100, 1e3, loss)
        results.append((torch.tensor(losses, dtype=torch.float64), model))
    (auto_losses, auto_model), (gram_losses, gram_model) = results
    optimum = least_squares(Polynomial(1, 3), table)
    return auto_losses, gram_losses, auto_model, gram_model, optimum


def test_rmsprop_follows_the_same_path_as_autograd():
    auto, gram, auto_model, gram_model, optimum = train_both("RMSprop", 1e-3, 2000)
    # Each history keeps its loss's precision: autograd's float32, gram's float64.
    assert torch.equal(auto.float().double(), auto)
    assert not torch.equal(gram.float().double(), gram)
    # The same path to float32 rounding while the loss falls (docs/pipeline.md: 1.7e-6) ...
    assert torch.allclose(gram[:1000], auto[:1000], rtol=1.7e-6, atol=0)
    # ... then RMSprop circles the optimum at lr 1e-3 and the two circle out of phase.
    assert gram[-1].item() == pytest.approx(auto[-1].item(), rel=0.01)
    for model in (auto_model, gram_model):
        assert (model.coefficients() - optimum).abs().max().item() < 1e-3


def test_lbfgs_reaches_the_least_squares_optimum():
    _, gram, _, gram_model, optimum = train_both("LBFGS", 1.0, 20)
    assert (gram_model.coefficients() - optimum).abs().max().item() < 1e-5
    assert gram[-1].item() == pytest.approx(gram.min().item())


def test_an_exact_fit_never_reports_a_negative_loss():
    X = torch.linspace(-2, 2, 4001).unsqueeze(-1)
    y = (0.5 - X + 0.25 * X**3)[:, 0]  # a cubic: the optimum's loss is zero up to rounding
    model = Polynomial(1, 3)
    with torch.no_grad():
        model.linear.bias.fill_(0.5)
        model.linear.weight.copy_(torch.tensor([[-1.0, 0.0, 0.25]]))
    loss = gram_loss(model, X, y)(model, X, y)
    assert 0.0 <= loss.item() < 1e-6


def test_another_model_is_refused_in_one_line():
    from polyfit.errors import UsageError

    with pytest.raises(UsageError, match="gram works for the Polynomial model only"):
        gram_loss(torch.nn.Linear(1, 1), torch.zeros(3, 1), torch.zeros(3))


@pytest.mark.slow  # runs generate, then train twice, at the default 2000 steps
def test_train_stage_with_gram_logs_it_and_lands_beside_autograd(stage_dir):
    params = default_params() | {"mlflow": default_params()["mlflow"]}
    params["train"]["checkpoint_every"] = None  # the stage folder has no pipeline to fingerprint
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
