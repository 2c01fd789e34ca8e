"""The training loop for any model and torch.optim optimizer: how optimizers are built from
params, divergence detection, what the loop reports and hands to checkpoints, a loop that goes
on from a history, and the batches it draws (the full table, or a seeded, resumable shuffle of
mini-batches). A whole training resumed from a checkpoint: tests/test_resume.py.

Runs on the machinery tests' table with the repo's own model block, or on models defined here:
nothing in this file knows which model params.yaml describes."""

import math

import pytest
import torch
from conftest import TABLE_FEATURES, table_params, write_table

from polyfit import files
from polyfit.core.batches import ShuffledBatches, full_batch, mini_batches
from polyfit.core.data import Table, from_csv
from polyfit.core.fit import build_optimizer, check_divergence, fit, summed_squared_error
from polyfit.core.model import build_model
from polyfit.errors import DivergedError
from polyfit.params import OPTIMIZERS, validate_params

PARAMS = validate_params(table_params())


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Table:
    """The rows the train stage would train on: the table's csv block, split as generate does."""
    folder = tmp_path_factory.mktemp("table")
    write_table(folder / "table.csv")
    csv = PARAMS.data.csv.model_dump() | {"path": str(folder / "table.csv")}
    train, _ = from_csv(**csv)
    return train


def repo_model() -> torch.nn.Module:
    """The model params.yaml's model block describes, for the table's features."""
    return build_model(PARAMS.model.model_dump(), len(TABLE_FEATURES))


class Tiny(torch.nn.Module):
    """Not the repo's model: a two-layer network over (N, F), as a user might write one."""

    def __init__(self, n_features: int):
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(n_features, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
        )

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.layers(X)[:, 0]


# --- optimizers, as params.yaml configures them ---


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_builds_from_params_as_torch_optim(name):
    options = getattr(PARAMS.train.options, name).model_dump()
    given = dict(options)
    optimizer = build_optimizer(name, repo_model().parameters(), 0.01, options)
    assert type(optimizer) is getattr(torch.optim, name)
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.01
    for key, value in options.items():  # every option reaches the optimizer, as torch names it
        if key in ("beta1", "beta2"):
            assert group["betas"] == (options["beta1"], options["beta2"])
        elif key == "line_search_fn" and value == "none":
            assert group[key] is None
        else:
            assert group[key] == value, key
    assert options == given  # the params' own dict is left as it was


def test_lbfgs_without_a_line_search_is_torchs_none():
    options = PARAMS.train.options.LBFGS.model_dump() | {"line_search_fn": "none"}
    optimizer = build_optimizer("LBFGS", repo_model().parameters(), 1.0, options)
    assert optimizer.param_groups[0]["line_search_fn"] is None


# --- divergence ---


def test_a_non_finite_loss_is_divergence_at_its_step():
    with pytest.raises(DivergedError, match=r"^loss became non-finite at step 2 \("):
        check_divergence([3.0, 2.0, math.inf, 1.0], 1e3)
    with pytest.raises(DivergedError, match=r"non-finite at step 1 "):
        check_divergence([3.0, math.nan], 1e3)


def test_growth_beyond_the_factor_is_divergence_and_up_to_it_is_not():
    check_divergence([1.0, 5.0, 10.0], 10.0)  # exactly the factor: still training
    with pytest.raises(DivergedError) as raised:
        check_divergence([1.0, 5.0, 10.5, 1e6], 10.0)
    assert str(raised.value) == (
        "loss grew to 10.5 at step 2, over 10 x the first loss 1 (train.divergence_factor)"
    )


def test_divergence_is_checked_from_the_losses_not_yet_checked():
    check_divergence([1.0, 50.0, 2.0], 10.0, since=2)  # step 1 was checked before
    with pytest.raises(DivergedError, match="at step 2"):
        check_divergence([1.0, 2.0, 50.0], 10.0, since=2)


class Quadratic(torch.nn.Module):
    """loss = w^2 from w = 1: plain SGD at lr 1.1 takes w to -1.2 w, so the loss grows 1.44x a
    step, finite for hundreds of steps."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(1.0))


def growing_loss(model, X, y):
    return model.w.square()


@pytest.mark.parametrize("log_every", [1, 100])
def test_fit_stops_at_the_first_step_past_the_factor_however_often_it_reads(log_every):
    """1.44^7 = 12.8 > 10 at step 7, whether the losses are read every step or at the end."""
    model = Quadratic()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.1)
    batches = full_batch(torch.zeros(1, 1), torch.zeros(1))
    with pytest.raises(DivergedError, match=r"grew to 12\.84 at step 7, over 10 x"):
        fit(model, optimizer, batches, 20, log_every, 10.0, growing_loss)


# --- what the loop reports and hands to checkpoints ---


def counting(batches):
    """The batches, counting how many the loop takes."""
    taken = [0]

    def generator():
        for batch in batches:
            taken[0] += 1
            yield batch

    return generator(), taken


def test_fit_returns_the_loss_before_each_step_and_reports_every_log_every_and_the_last(table):
    torch.manual_seed(0)
    model = Tiny(len(table.features))
    with torch.no_grad():
        first = summed_squared_error(model, table.X, table.y).item()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batches, taken = counting(full_batch(table.X, table.y))
    reported, saved = [], []
    history = fit(
        model,
        optimizer,
        batches,
        10,
        4,
        1e3,
        report=lambda step, loss: reported.append((step, loss)),
        checkpoint_every=3,
        checkpoint=lambda losses: saved.append(list(losses)),
    )
    assert len(history) == 10 and taken == [10]  # one batch a step
    assert history[0] == first  # the loss at the initial weights
    assert reported == [(3, history[3]), (7, history[7]), (9, history[9])]
    assert saved == [history[:3], history[:6], history[:9]]  # the history up to each checkpoint


def test_fit_goes_on_from_a_given_history(table):
    torch.manual_seed(0)
    model = Tiny(len(table.features))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batches, taken = counting(full_batch(table.X, table.y))
    reported = []
    earlier = [9.0, 8.0, 7.0, 6.0, 5.0]
    history = fit(
        model,
        optimizer,
        batches,
        8,
        2,
        1e3,
        losses=earlier,
        report=lambda step, loss: reported.append(step),
    )
    assert history[:5] == earlier and len(history) == 8 and taken == [3]
    assert reported == [5, 7]
    assert earlier == [9.0, 8.0, 7.0, 6.0, 5.0]  # the caller's list is not changed


def test_lbfgs_takes_one_batch_and_records_one_loss_per_step(table):
    """LBFGS evaluates the loss several times a step (the closure path)."""
    torch.manual_seed(0)
    model = Tiny(len(table.features))
    options = PARAMS.train.options.LBFGS.model_dump()
    optimizer = build_optimizer("LBFGS", model.parameters(), 1.0, options)
    batches, taken = counting(full_batch(table.X, table.y))
    history = fit(model, optimizer, batches, 5, 5, 1e3)
    assert len(history) == 5 and taken == [5]
    assert history[-1] < history[0]


def test_fit_trains_any_module_with_its_own_loss_function(table):
    """The loop only calls model(X) and the loss function: a network of the user's, mini-batches
    and a mean absolute error."""

    def mean_absolute_error(model, X, y):
        return (model(X) - y).abs().mean()

    torch.manual_seed(0)
    model = Tiny(len(table.features))
    with torch.no_grad():
        before = mean_absolute_error(model, table.X, table.y).item()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    batches = mini_batches(table.X, table.y, ShuffledBatches(len(table.y), 16, seed=0))
    history = fit(model, optimizer, batches, 300, 100, 1e3, mean_absolute_error)
    assert len(history) == 300
    with torch.no_grad():
        assert mean_absolute_error(model, table.X, table.y).item() < 0.5 * before


# --- batches ---


def test_the_full_batch_is_the_same_tensors_at_every_step(table):
    batches = full_batch(table.X, table.y)
    for _ in range(3):
        X, y = next(batches)
        assert X is table.X and y is table.y


def test_each_epoch_of_mini_batches_is_a_shuffle_of_every_row():
    sampler = iter(ShuffledBatches(10, 4, seed=0))
    epochs = [[next(sampler) for _ in range(3)] for _ in range(2)]  # 4 + 4 + 2 rows each
    for batches in epochs:
        assert [len(batch) for batch in batches] == [4, 4, 2]
        assert sorted(torch.cat(batches).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(epochs[0]), torch.cat(epochs[1]))  # a new order


def draw(sampler: ShuffledBatches, count: int) -> list[list[int]]:
    """The next `count` batches of a sampler (each iter() carries on where it stopped)."""
    drawn = iter(sampler)
    return [next(drawn).tolist() for _ in range(count)]


def test_the_order_of_mini_batches_is_the_seeds():
    assert draw(ShuffledBatches(50, 8, seed=3), 20) == draw(ShuffledBatches(50, 8, seed=3), 20)
    assert draw(ShuffledBatches(50, 8, seed=3), 20) != draw(ShuffledBatches(50, 8, seed=4), 20)


@pytest.mark.parametrize("taken", [0, 3, 7, 9])  # 7 batches an epoch: first, mid, end, next
def test_mini_batches_resume_from_a_saved_state(taken, tmp_path):
    """The sampler's state as a checkpoint stores it (torch.save, loaded weights_only) gives the
    same batches as a sampler that never stopped."""
    straight = draw(ShuffledBatches(50, 8, seed=0), taken + 10)
    first = ShuffledBatches(50, 8, seed=0)
    assert draw(first, taken) == straight[:taken]
    path = tmp_path / "state.pt"
    files.write_atomic(path, files.to_bytes(first.state_dict()))
    resumed = ShuffledBatches(50, 8, seed=0)
    resumed.load_state_dict(files.load_saved(path, path.read_bytes()))
    assert draw(resumed, 10) == straight[taken:]


def test_mini_batches_are_the_rows_the_sampler_draws(table):
    order = draw(ShuffledBatches(len(table.y), 16, seed=5), 6)
    batches = mini_batches(table.X, table.y, ShuffledBatches(len(table.y), 16, seed=5))
    for rows in order:
        X, y = next(batches)
        assert torch.equal(X, table.X[rows]) and torch.equal(y, table.y[rows])
