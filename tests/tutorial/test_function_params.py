"""The function data source's params (data.function: the tutorial's y = sin(x) on a range) and
their rules against the tutorial's model (model.degree): the ranges, the float32 overflows of
x^degree and exp(x), the int64 counts and the memory the sizes need.

On the repo's params.yaml, which is the tutorial's. The machinery's own keys (train.*, mlflow.*,
data.source, data.csv.*) are tested outside this folder on a table of their own.
"""

import math
import re

import pytest
import torch
import yaml
from conftest import REPO, clean_env, default_params, params_error, polyfit, write_params

from polyfit.core.batches import full_batch
from polyfit.core.fit import build_optimizer, fit, summed_squared_error
from polyfit.core.model import Polynomial
from polyfit.errors import DivergedError, UsageError
from polyfit.memory import check_memory, memory_needed
from polyfit.params import FLOAT32_MAX, load_params, validate_params
from polyfit.yaml12 import parse_yaml


def function_params(**function) -> dict:
    """The repo's params (the function source) with data.function keys changed; a key set to
    ... is removed."""
    params = default_params()
    block = params["data"]["function"]
    for key, value in function.items():
        if value is ...:
            del block[key]
        else:
            block[key] = value
    return params


def test_repo_params_are_valid_and_match_the_seed():
    params = load_params(REPO / "params.yaml")
    function = params.data.function
    assert params.data.source == "function" and function.target == "sin"
    assert function.x_min == -math.pi and function.x_max == math.pi
    assert function.n_samples == 2000 and params.model.degree == 3
    assert (params.train.optimizer, params.train.lr, params.train.steps) == ("RMSprop", 1e-3, 2000)


# For every data.function key: values of the wrong kind and out of range, through YAML.
BAD_VALUES = {
    "target": ["tan", 5, None, ["sin"], ...],
    "x_min": ["small", "-3.0", False, None, math.nan, math.inf, ...],
    "x_max": ["big", "3.0", True, None, math.nan, -math.inf, ...],
    "n_samples": [0, -5, 2.5, "many", "2000", True, None, 2**63, ...],
    "noise_std": [-0.1, "none", "0.1", None, math.nan, math.inf, ...],
    "seed": [-1, 2**63, 1.5, "0", None, ...],
    "held_out_points": [1, 0, 2.5, "many", None, 2**63, ...],
}
ROWS = [
    pytest.param(key, value, id=f"{key}-{value!r}")
    for key, values in BAD_VALUES.items()
    for value in values
]


def test_every_function_key_has_bad_values():
    assert set(BAD_VALUES) == set(default_params()["data"]["function"])


@pytest.mark.parametrize(("key", "value"), ROWS)
def test_a_bad_function_value_names_its_key(key, value):
    text = yaml.safe_dump(function_params(**{key: value}), sort_keys=False)
    with pytest.raises(UsageError) as caught:
        validate_params(parse_yaml(text, "params.yaml"), "params.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"params.yaml: data.function.{key}"), message


def test_a_quoted_number_says_to_unquote_it():
    assert params_error(function_params(x_max="3.0")) == (
        "params.yaml: data.function.x_max: got the string '3.0'; write the number without "
        "quotes: 3.0"
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"x_min": 4.0}, "data.function.x_min (4.0) must be below data.function.x_max"),
        ({"x_min": 1.0, "x_max": 1.0}, "data.function.x_min (1.0) must be below"),
        ({"n_samples": 3}, "data.function.n_samples (3) must exceed model.degree (3)"),
    ],
    ids=["x_min above x_max", "x_min equal to x_max", "too few samples for the degree"],
)
def test_rules_joining_two_keys(changes, expected):
    assert expected in params_error(function_params(**changes))


def test_the_function_block_is_needed_only_when_the_source_names_it():
    params = function_params()
    del params["data"]["function"]
    assert params_error(params) == (
        "params.yaml: data: data.source is 'function', but there is no data.function"
    )
    params["data"]["source"] = "csv"
    params["data"]["csv"] = {
        "path": "data/table.csv",
        "features": ["x"],
        "target": "y",
        "held_out_fraction": 0.25,
        "split_seed": 0,
    }
    validate_params(params)


BEYOND_FLOAT32 = 3.5e38  # finite in float64, +inf in float32


@pytest.mark.parametrize("key", ["x_max", "noise_std"])
@pytest.mark.parametrize("value", [BEYOND_FLOAT32, 1e308])
def test_values_torch_takes_as_float32_must_fit_float32(key, value):
    expected = f"data.function.{key}: {value!r} is beyond float32's range"
    assert expected in params_error(function_params(**{key: value}))


def test_x_min_beyond_float32_names_x_min():
    message = params_error(function_params(x_min=-1e39))
    assert "data.function.x_min: -1e+39 is beyond float32's range" in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("x_max", 1e13, "data.function.x_max (1e+13): x^3 (model.degree) overflows float32"),
        ("x_min", -1e13, "data.function.x_min (1e+13): x^3 (model.degree) overflows float32"),
        ("noise_std", 1e38, "data.function.noise_std (1e+38): y + noise overflows float32"),
    ],
)
def test_ranges_whose_float32_data_would_overflow(key, value, expected):
    assert expected in params_error(function_params(**{key: value}))


def test_the_power_limit_follows_model_degree():
    params = function_params(x_max=1e6)  # 1e18 at degree 3, 1e42 at degree 7
    validate_params(params)
    params["model"]["degree"] = 7
    assert "x^7 (model.degree) overflows float32 beyond |x| = 3.196e+05" in params_error(params)


def test_exp_target_beyond_88_overflows_float32():
    params = function_params(target="exp", x_max=89.0)
    assert "data.function.x_max (89): exp(x) overflows float32" in params_error(params)
    params["data"]["function"]["x_max"] = 88.0
    assert validate_params(params).data.function.x_max == 88.0


@pytest.mark.parametrize("key", ["n_samples", "held_out_points", "seed"])
def test_counts_must_fit_int64(key):
    message = params_error(function_params(**{key: 2**63}))
    assert f"data.function.{key}: Input should be less than 9223372036854775808" in message


def test_memory_estimate_names_the_larger_function_size():
    params = validate_params(default_params())
    needed, key = memory_needed(params, "generate")
    assert key == "data.function.held_out_points"  # 10000 points against 2000 samples
    big = validate_params(function_params(n_samples=10**9))
    needed, key = memory_needed(big, "train")
    assert key == "data.function.n_samples" and needed > 40 * 10**9  # x, y, powers, temporaries
    big = validate_params(function_params(held_out_points=10**9))
    for stage in ("generate", "train", "evaluate"):
        needed, key = memory_needed(big, stage)
        assert key == "data.function.held_out_points" and needed > 10**11


def test_function_sizes_that_would_not_fit_are_refused_naming_the_key():
    params = validate_params(function_params(n_samples=10**6))
    needed, key = memory_needed(params, "evaluate")
    assert key == "data.function.n_samples"
    check_memory(params, "evaluate", "params.yaml", available=needed)  # just fits
    with pytest.raises(UsageError, match=r"^params.yaml: data.function.n_samples: evaluate would"):
        check_memory(params, "evaluate", "params.yaml", available=needed - 1)


def test_a_generate_too_large_for_memory_exits_2_before_touching_anything(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    write_params(tmp_path, function_params(n_samples=10**12))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = polyfit("generate", cwd=tmp_path, env=clean_env(MLFLOW_TRACKING_URI=store))
    assert done.returncode == 2
    line = (
        r"polyfit generate: error: params.yaml: data.function.n_samples: generate would need "
        r"about \d+ bytes \([\d.]+ [KMGTP]?B\) of memory, \d+ bytes \([\d.]+ [KMGTP]?B\) "
        r"available\n"
    )
    assert re.fullmatch(line, done.stderr), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dvc.yaml", "params.yaml"]


def test_a_loss_that_overflows_from_the_start_points_at_the_data_not_the_lr():
    torch.manual_seed(0)
    x = torch.linspace(-1e12, 1e12, 100).unsqueeze(-1)  # valid float32 data whose x^3 squared
    model = Polynomial(1, 3)  # overflows
    optimizer = build_optimizer("SGD", model.parameters(), 1e-3, {})
    batches = full_batch(x, torch.sin(x[:, 0]))
    with pytest.raises(DivergedError, match=r"step 0 \(the data or the model's output too large"):
        fit(model, optimizer, batches, 10, 5, 1e3, summed_squared_error)


def test_a_range_end_near_float32s_largest_is_accepted_where_no_power_overflows():
    params = function_params(x_min=-1.0, x_max=1e38)
    params["model"]["degree"] = 1
    assert validate_params(params).data.function.x_max == 1e38 < FLOAT32_MAX
