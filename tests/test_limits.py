"""Validation against the machine: float32 range, int64 counts, and the memory a stage needs
(the training steps, the size of a CSV source), refused before a stage allocates; where the
system does not say how much memory is free, the check is skipped.

On the machinery's params (conftest.table_params); the function source's float32 and memory
rules are the tutorial's (tests/tutorial/test_function_params.py).
"""

import builtins
import contextlib
import io
import os
import re

import psutil
import pytest
from conftest import TABLE, clean_env, params_error, polyfit, table_params, write_params
from hypothesis import given, settings
from hypothesis import strategies as st
from test_params import mutated

from polyfit.errors import UsageError
from polyfit.memory import (
    BYTES_PER_ITEM,
    CSV_EXPANSION,
    available_memory,
    check_memory,
    memory_needed,
)
from polyfit.params import FLOAT32_MAX, validate_params

BEYOND_FLOAT32 = 3.5e38  # finite in float64, +inf in float32


@pytest.mark.parametrize(
    "path",
    [
        "train.lr",
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
    assert f"{path}: {value!r} is beyond float32's range" in params_error(mutated(path, value))


def test_divergence_factor_is_python_float64_so_any_finite_value_is_accepted():
    assert validate_params(mutated("train.divergence_factor", 1e308)).train.divergence_factor


def test_the_largest_float32_is_accepted():
    assert validate_params(mutated("train.lr", FLOAT32_MAX)).train.lr == FLOAT32_MAX


@pytest.mark.parametrize(
    "path",
    [
        "train.steps",
        "train.log_every",
        "train.seed",
        "train.batch_size",
        "train.checkpoint_every",
        "train.options.LBFGS.max_iter",
        "data.csv.split_seed",
    ],
)
def test_counts_must_fit_int64(path):
    assert f"{path}: Input should be less than 9223372036854775808" in params_error(
        mutated(path, 2**63)
    )
    validate_params(mutated(path, 2**63 - 1))  # the largest int64 is a valid count


def test_a_huge_value_is_shown_shortened_on_one_line():
    message = params_error(mutated("train.lr", 10**400))  # an int too large for a float
    assert message.startswith("params.yaml: train.lr: Input should be a valid number (got 1000")
    assert message.endswith("...)") and len(message) < 150


@pytest.mark.parametrize(
    ("name", "value"),
    [("experiment", " "), ("experiment", "x" * 501), ("registered_model", "a/b")]
    + [("registered_model", bad) for bad in ("a:b", ".", "..x", "  ")],
)
def test_mlflow_names_mlflow_would_refuse(name, value):
    message = params_error(mutated(f"mlflow.{name}", value))
    assert message.startswith(f"params.yaml: mlflow.{name}: ")


# --- memory ---


def sparse_file(path, size: int) -> None:
    """A file of `size` bytes that takes no disk: what the memory check sees is its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)


def test_memory_estimate_grows_with_the_key_it_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sparse_file(tmp_path / TABLE, 10**6)
    params = validate_params(table_params(steps=1000))
    assert memory_needed(params, "generate") == (10**6 * CSV_EXPANSION, "data.csv.path")
    assert memory_needed(params, "train") == (1000 * BYTES_PER_ITEM, "train.steps")
    # evaluate reads the tables generate wrote, whose rows were counted when the CSV was read
    assert memory_needed(params, "evaluate") == (0, "data")
    bigger = validate_params(table_params(steps=10**9))
    assert memory_needed(bigger, "train") == (10**9 * BYTES_PER_ITEM, "train.steps")
    sparse_file(tmp_path / TABLE, 10**9)
    assert memory_needed(params, "generate")[0] == 10**9 * CSV_EXPANSION


def test_a_csv_that_is_not_there_needs_no_memory_its_reader_says_why(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert memory_needed(validate_params(table_params()), "generate") == (0, "data.csv.path")


def test_a_stage_that_would_not_fit_is_refused_naming_key_and_bytes():
    params = validate_params(table_params(steps=2000))
    needed, _ = memory_needed(params, "train")
    assert needed == 2000 * BYTES_PER_ITEM
    check_memory(params, "train", "params.yaml", available=needed)  # just fits
    with pytest.raises(UsageError) as caught:
        check_memory(params, "train", "params.yaml", available=needed - 1)
    assert str(caught.value) == (
        f"params.yaml: train.steps: train would need about {needed} bytes (800 KB) of memory, "
        f"{needed - 1} bytes (800 KB) available"
    )


def test_a_csv_too_large_for_memory_is_refused_naming_data_csv_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sparse_file(tmp_path / TABLE, 10**6)
    params = validate_params(table_params())
    check_memory(params, "generate", "params.yaml", available=40 * 10**6)  # just fits
    with pytest.raises(UsageError) as caught:
        check_memory(params, "generate", "params.yaml", available=40 * 10**6 - 1)
    assert str(caught.value).startswith(
        "params.yaml: data.csv.path: generate would need about 40000000 bytes (40 MB) of memory"
    )


def test_available_memory_is_meminfos_memavailable():
    with open("/proc/meminfo") as meminfo:
        line = next(line for line in meminfo if line.startswith("MemAvailable:"))
    reported = int(line.split()[1]) * 1024
    assert abs(available_memory() - reported) < 0.2 * reported  # both moving, same order


@contextlib.contextmanager
def no_meminfo():
    """/proc/meminfo absent for this process's opens, as psutil finds it on a system without
    procfs: psutil.virtual_memory() raises."""
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, str | bytes | os.PathLike) and os.fsdecode(file) == "/proc/meminfo":
            raise FileNotFoundError(2, "No such file or directory", "/proc/meminfo")
        return real_open(file, *args, **kwargs)

    builtins.open = io.open = guarded
    try:
        yield
    finally:
        builtins.open = io.open = real_open


def test_without_an_answer_from_psutil_the_memory_check_is_skipped():
    huge = validate_params(table_params(steps=10**15))  # 400 PB: refused wherever it is known
    with pytest.raises(UsageError):
        check_memory(huge, "train", "params.yaml")
    with no_meminfo():
        with pytest.raises(FileNotFoundError):
            psutil.virtual_memory()  # the fault is real: psutil has no answer
        assert available_memory() is None
        check_memory(huge, "train", "params.yaml")  # skipped, not a crash
    assert available_memory() > 0  # and back once /proc/meminfo is


def stage_line(stage: str, key: str) -> str:
    return (
        rf"polyfit {stage}: error: params.yaml: {re.escape(key)}: {stage} would need about \d+ "
        r"bytes \([\d.]+ [KMGTP]?B\) of memory, \d+ bytes \([\d.]+ [KMGTP]?B\) available\n"
    )


@pytest.mark.parametrize(
    ("stage", "key"), [("generate", "data.csv.path"), ("train", "train.steps")]
)
def test_a_stage_too_large_for_memory_exits_2_before_touching_anything(tmp_path, stage, key):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    write_params(tmp_path, table_params(steps=10**12))
    sparse_file(tmp_path / TABLE, 10**12)  # a CSV of 1 TB: 40 TB while read
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = polyfit(stage, cwd=tmp_path, env=clean_env(MLFLOW_TRACKING_URI=store))
    assert done.returncode == 2
    assert re.fullmatch(stage_line(stage, key), done.stderr), done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "dvc.yaml", "params.yaml"]
    assert [p.name for p in (tmp_path / "data").iterdir()] == [TABLE.name]


def test_check_refuses_sizes_that_would_not_fit_in_any_stage(tmp_path):
    """`polyfit check`, dvc.yaml's first stage, checks every stage's memory: a train too
    large stops `dvc repro` before generate runs."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    write_params(tmp_path, table_params(steps=10**12))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = polyfit("check", cwd=tmp_path, env=clean_env(MLFLOW_TRACKING_URI=store))
    assert (done.returncode, done.stdout) == (2, "")
    line = stage_line("train", "train.steps").replace("polyfit train:", "polyfit check:", 1)
    assert re.fullmatch(line, done.stderr), done.stderr
    write_params(tmp_path, table_params())
    done = polyfit("check", cwd=tmp_path, env=clean_env(MLFLOW_TRACKING_URI=store))
    assert (done.returncode, done.stdout, done.stderr) == (0, "params.yaml: valid\n", "")
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
    st.lists(st.text(max_size=3), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def leaves(tree: dict, prefix: tuple = ()) -> list[tuple]:
    found = []
    for key, value in tree.items():
        path = (*prefix, key)
        found.extend(leaves(value, path) if isinstance(value, dict) else [path])
    return found


# The machinery's leaves: the model block is the user's (any keys, any rules), so it is left as is.
LEAVES = [path for path in leaves(table_params()) if path[0] != "model"]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(LEAVES), YAML_VALUES)
def test_any_value_at_any_leaf_is_accepted_or_refused_in_one_line(path, value):
    params = table_params()
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
        needed, key = memory_needed(validated, stage)
        assert needed >= 0 and key.startswith(("data", "train."))
