"""Validation against the machine: float32 range, int64 counts, and the memory a stage needs."""

import re

import pytest
from conftest import clean_env, default_params, polyfit, write_params
from hypothesis import given, settings
from hypothesis import strategies as st
from test_params import error_for, mutated

from polyfit.errors import UsageError
from polyfit.memory import available_memory, check_memory, memory_needed
from polyfit.params import FLOAT32_MAX, validate_params

BEYOND_FLOAT32 = 3.5e38  # finite in float64, +inf in float32


@pytest.mark.parametrize(
    "path",
    [
        "train.lr",
        "data.x_max",
        "data.noise_std",
        "train.options.SGD.momentum",
        "train.options.SGD.weight_decay",
        "train.options.RMSprop.eps",
        "train.options.Adam.weight_decay",
        "train.options.Adagrad.initial_accumulator_value",
        "train.options.LBFGS.tolerance_grad",
    ],
)
@pytest.mark.parametrize("value", [BEYOND_FLOAT32, 1e308])
def test_values_torch_takes_as_float32_must_fit_float32(path, value):
    assert f"{path}: {value!r} is beyond float32's range" in error_for(mutated(path, value))


def test_x_min_beyond_float32_names_x_min():
    assert "data.x_min: -1e+39 is beyond float32's range" in error_for(mutated("data.x_min", -1e39))


def test_divergence_factor_is_python_float64_so_any_finite_value_is_accepted():
    assert validate_params(mutated("train.divergence_factor", 1e308)).train.divergence_factor


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("data.x_max", 1e13, "data.x_max (1e+13): x^3 (model.degree) overflows float32"),
        ("data.x_min", -1e13, "data.x_min (1e+13): x^3 (model.degree) overflows float32"),
        ("data.noise_std", 1e38, "data.noise_std (1e+38): y + noise overflows float32"),
    ],
)
def test_ranges_whose_float32_data_would_overflow(path, value, expected):
    assert expected in error_for(mutated(path, value))


def test_exp_target_beyond_88_overflows_float32():
    params = mutated("data.target", "exp")
    params["data"]["x_max"] = 89.0
    assert "data.x_max (89): exp(x) overflows float32" in error_for(params)
    params["data"]["x_max"] = 88.0
    assert validate_params(params).data.x_max == 88.0


def test_the_largest_float32_is_accepted():
    assert validate_params(mutated("train.lr", FLOAT32_MAX)).train.lr == FLOAT32_MAX


@pytest.mark.parametrize(
    "path", ["data.n_samples", "train.steps", "train.log_every", "evaluate.grid_points"]
)
def test_counts_must_fit_int64(path):
    assert f"{path}: Input should be less than 9223372036854775808" in error_for(
        mutated(path, 2**63)
    )


def test_a_huge_value_is_shown_shortened_on_one_line():
    message = error_for(mutated("train.lr", 10**400))  # an int too large for a float
    assert message.startswith("params.yaml: train.lr: Input should be a valid number (got 1000")
    assert message.endswith("...)") and len(message) < 150


@pytest.mark.parametrize(
    ("name", "value"),
    [("experiment", " "), ("experiment", "x" * 501), ("registered_model", "a/b")]
    + [("registered_model", bad) for bad in ("a:b", ".", "..x", "  ")],
)
def test_mlflow_names_mlflow_would_refuse(name, value):
    assert error_for(mutated(f"mlflow.{name}", value)).startswith(f"params.yaml: mlflow.{name}: ")


def test_memory_estimate_grows_with_the_key_it_names():
    params = validate_params(default_params())
    for stage, key in [("generate", "data.n_samples"), ("train", "train.steps")]:
        assert memory_needed(params, stage)[1] == key
    big = mutated("evaluate.grid_points", 10**9)
    needed, key = memory_needed(validate_params(big), "evaluate")
    assert key == "evaluate.grid_points" and needed > 10**11  # > 100 B a point
    big = mutated("data.n_samples", 10**9)
    needed, key = memory_needed(validate_params(big), "train")
    assert key == "data.n_samples" and needed > 40 * 10**9  # x, y, features (N, 3), temporaries


def test_a_stage_that_would_not_fit_is_refused_naming_key_and_bytes():
    params = validate_params(default_params())
    needed, _ = memory_needed(params, "train")
    check_memory(params, "train", "params.yaml", available=needed)  # just fits
    with pytest.raises(UsageError) as caught:
        check_memory(params, "train", "params.yaml", available=needed - 1)
    assert str(caught.value) == (
        f"params.yaml: train.steps: train would need about {needed} bytes (800 KB) of memory, "
        f"{needed - 1} bytes (800 KB) available"
    )


def test_available_memory_is_meminfos_memavailable():
    with open("/proc/meminfo") as meminfo:
        line = next(line for line in meminfo if line.startswith("MemAvailable:"))
    reported = int(line.split()[1]) * 1024
    assert abs(available_memory() - reported) < 0.2 * reported  # both moving, same order


@pytest.mark.parametrize(
    ("stage", "path", "value"),
    [
        ("generate", "data.n_samples", 10**12),
        ("train", "train.steps", 10**12),
        ("evaluate", "evaluate.grid_points", 10**11),
    ],
)
def test_a_stage_too_large_for_memory_exits_2_before_touching_anything(
    tmp_path, stage, path, value
):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    write_params(tmp_path, mutated(path, value))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = polyfit(stage, cwd=tmp_path, env=clean_env(MLFLOW_TRACKING_URI=store))
    assert done.returncode == 2
    line = (
        rf"polyfit {stage}: error: params.yaml: {path}: {stage} would need about \d+ bytes "
        r"\([\d.]+ [KMGTP]?B\) of memory, \d+ bytes \([\d.]+ [KMGTP]?B\) available\n"
    )
    assert re.fullmatch(line, done.stderr), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dvc.yaml", "params.yaml"]


# Any YAML value at any leaf: validation either accepts it or says what is wrong in one line.
YAML_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**63), 2**64, 10**12, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 3.5e38, 1e-320, 1e12, 1e11]),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def leaves(tree: dict, prefix: tuple = ()) -> list[tuple]:
    found = []
    for key, value in tree.items():
        path = (*prefix, key)
        found.extend(leaves(value, path) if isinstance(value, dict) else [path])
    return found


LEAVES = leaves(default_params())


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(LEAVES), YAML_VALUES)
def test_any_value_at_any_leaf_is_accepted_or_refused_in_one_line(path, value):
    params = default_params()
    *parents, leaf = path
    block = params
    for key in parents:
        block = block[key]
    block[leaf] = value
    try:
        validated = validate_params(params, "params.yaml")
    except UsageError as error:
        assert "\n" not in str(error) and str(error).startswith("params.yaml: ")
        return
    for stage in ("generate", "train", "evaluate"):
        assert memory_needed(validated, stage)[0] > 0


def test_a_loss_that_overflows_from_the_start_points_at_the_data_not_the_lr():
    import torch

    from polyfit.core.fit import build_optimizer, fit, make_loss
    from polyfit.core.model import Polynomial
    from polyfit.errors import DivergedError

    torch.manual_seed(0)
    x = torch.linspace(-1e12, 1e12, 100)  # valid float32 data whose x^3 squared overflows
    model = Polynomial(3)
    optimizer = build_optimizer("SGD", model.parameters(), 1e-3, {})
    with pytest.raises(DivergedError, match=r"step 0 \(data\.x_\*, noise_std or model\.degree"):
        fit(make_loss("autograd", model, x, torch.sin(x)), optimizer, 10, 5, 1e3)
