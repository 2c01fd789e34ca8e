"""params.yaml validation: every invalid case stops with one line naming the key.

On the machinery's params (conftest.table_params: the table as a CSV source, the repo's own model
block); the function source's own rules are the tutorial's (tests/tutorial/test_function_params.py).
"""

import pytest
import yaml
from conftest import REPO, params_error, table_params, write_params

from polyfit.errors import UsageError
from polyfit.params import load_params, validate_params
from polyfit.yaml12 import parse_yaml


def block_of(params: dict, path: str) -> tuple[dict, str]:
    """The mapping that holds the key at dotted `path`, and that key."""
    *parents, leaf = path.split(".")
    for key in parents:
        params = params[key]
    return params, leaf


def mutated(path: str, value, params: dict | None = None) -> dict:
    """table_params() (or `params`) with the key at dotted `path` set to `value` (removed if
    ...)."""
    params = table_params() if params is None else params
    block, leaf = block_of(params, path)
    if value is ...:
        del block[leaf]
    else:
        block[leaf] = value
    return params


def test_the_repos_params_and_the_tables_are_valid():
    load_params(REPO / "params.yaml")
    params = validate_params(table_params())
    assert params.data.source == "csv"
    assert params.data.source_params() == params.data.csv.model_dump()  # the reader's arguments


def test_only_the_block_the_source_names_is_needed():
    params = table_params()
    assert "function" not in params["data"]  # table_params has the csv block alone
    validate_params(params)
    params["data"]["source"] = "function"
    assert params_error(params) == (
        "params.yaml: data: data.source is 'function', but there is no data.function"
    )


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("train.lr", "0.001", "train.lr: got the string '0.001'"),
        ("train.lr", "fast", "train.lr: Input should be a valid number"),
        ("train.lr", 0.0, "train.lr: Input should be greater than 0"),
        ("train.lr", -1.0, "train.lr: Input should be greater than 0"),
        ("train.lr", float("nan"), "train.lr: Input should be a finite number"),
        ("train.lr", float("inf"), "train.lr: Input should be a finite number"),
        ("train.steps", 0, "train.steps: Input should be greater than or equal to 1"),
        ("train.steps", 10.5, "train.steps: Input should be a valid integer"),
        ("train.steps", True, "train.steps: Input should be a valid integer"),
        ("train.batch_size", 0, "train.batch_size: Input should be greater than or equal to 1"),
        ("train.checkpoint_every", 0, "train.checkpoint_every: Input should be greater than or"),
        ("train.device", "tpu", "train.device: Input should be 'cpu', 'cuda' or 'auto'"),
        ("train.threads", 257, "train.threads: Input should be less than or equal to 256"),
        ("train.optimizer", "Adamax", "train.optimizer: Input should be 'SGD', 'RMSprop'"),
        ("train.momentum", 0.9, "train.momentum: unknown key"),
        ("train.seed", ..., "train.seed: missing key"),
        ("mlflow", ..., "mlflow: missing key"),
        ("model", ..., "model: missing key"),
        ("train.options.SGD.momentum", 0.0, "train.options.SGD: nesterov needs momentum > 0"),
        ("train.options.Adam.beta1", 1.0, "train.options.Adam.beta1: Input should be less than 1"),
        ("train.divergence_factor", 1.0, "train.divergence_factor: Input should be greater than 1"),
        ("mlflow.experiment", "", "mlflow.experiment: String should have at least 1 character"),
        ("data.source", "parquet", "data.source: Input should be 'function' or 'csv'"),
        ("data.csv.path", " ", "data.csv.path: must not be blank"),
        ("data.csv.features", [], "data.csv.features: List should have at least 1 item"),
        ("data.csv.features", "u", "data.csv.features: Input should be a valid list"),
        ("data.csv.features", ["u", "u"], "data.csv.features: 'u' is listed twice"),
        ("data.csv.features", ["u", 5], "data.csv.features.1: Input should be a valid string"),
        ("data.csv.features", ["u", "y"], "data.csv: target 'y' is also listed in features"),
        ("data.csv.held_out_fraction", 0.0, "data.csv.held_out_fraction: Input should be greater"),
        ("data.csv.held_out_fraction", 1.0, "data.csv.held_out_fraction: Input should be less"),
        ("data.csv.split_seed", -1, "data.csv.split_seed: Input should be greater than or equal"),
    ],
)
def test_invalid_value_names_the_key(path, value, expected):
    assert expected in params_error(mutated(path, value))


def test_gram_needs_the_full_batch():
    params = mutated("train.gradient", "gram")
    params["train"]["batch_size"] = None
    validate_params(params)
    params["train"]["batch_size"] = 16
    assert params_error(params) == (
        "params.yaml: train: gradient gram sums the whole table: batch_size must be null"
    )


def test_several_problems_report_the_first_and_count_the_rest():
    params = mutated("train.lr", -1.0)
    params["train"]["steps"] = 0
    assert params_error(params).endswith("(and 1 more problem)")
    params["data"]["csv"]["split_seed"] = -1
    assert params_error(params).endswith("(and 2 more problems)")


def renamed(params: dict, path: str, new_name: str) -> dict:
    """`params` with the key at dotted `path` renamed, its value and place kept."""
    block, leaf = block_of(params, path)
    items = [(new_name if key == leaf else key, value) for key, value in block.items()]
    block.clear()
    block.update(items)
    return params


@pytest.mark.parametrize(
    ("path", "typo", "meant"),
    [
        ("train", "trian", "train"),
        ("train.lr", "lrr", "lr"),
        ("train.options.Adam.beta1", "beta_1", "beta1"),
        ("data.csv.features", "feature", "features"),
        ("mlflow.registered_model", "registered_modle", "registered_model"),
    ],
)
def test_a_misspelt_key_is_one_problem_naming_the_key_meant(path, typo, meant):
    key = ".".join([*path.split(".")[:-1], typo])
    expected = f"params.yaml: {key}: unknown key; did you mean '{meant}'?"
    assert params_error(renamed(table_params(), path, typo)) == expected


def test_typos_are_reported_first_and_counted_once_each():
    params = renamed(renamed(table_params(), "train.steps", "stesp"), "train.seed", "sed")
    params["data"]["source"] = "parquet"  # an earlier key, but the typos explain the missing keys
    assert params_error(params) == (
        "params.yaml: train.stesp: unknown key; did you mean 'steps'? (and 2 more problems)"
    )


def test_an_unknown_key_unlike_the_missing_one_is_not_called_a_typo():
    message = params_error(renamed(table_params(), "train.lr", "learning_rate"))
    assert message == "params.yaml: train.lr: missing key (and 1 more problem)"


NOT_BLOCKS = "expected the blocks data, model, train, mlflow as a mapping, found"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("{}", "data: missing key (and 3 more problems)"),
        ("[1, 2]", f"{NOT_BLOCKS} a list"),
        ("just text", f"{NOT_BLOCKS} plain text"),
        ("3.5", f"{NOT_BLOCKS} a single value"),
        ("", f"{NOT_BLOCKS} an empty file"),
    ],
)
def test_non_mapping_or_empty_document(text, found, tmp_path):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(UsageError) as caught:
        load_params(tmp_path / "params.yaml")
    assert str(caught.value) == f"{tmp_path / 'params.yaml'}: {found}"


def test_malformed_yaml_names_the_line(tmp_path):
    (tmp_path / "params.yaml").write_text("data:\n  source: csv\n   csv: [1\n")
    with pytest.raises(UsageError, match=r"params.yaml: malformed YAML at line \d+"):
        load_params(tmp_path / "params.yaml")


def test_missing_file(tmp_path):
    with pytest.raises(UsageError, match=r"nope\.yaml: cannot read: No such file or directory"):
        load_params(tmp_path / "nope.yaml")


def test_exponent_floats_read_as_numbers_like_dvc_does(tmp_path):
    """DVC (YAML 1.2) writes `dvc exp run -S train.lr=1e-6` as `lr: 1e-06`: it must load."""
    from ruamel.yaml import YAML  # DVC's own YAML library

    write_params(tmp_path, table_params(lr=0.5))
    text = (tmp_path / "params.yaml").read_text()
    assert "  lr: 0.5\n" in text
    (tmp_path / "params.yaml").write_text(text.replace("  lr: 0.5\n", "  lr: 1e-06\n"))
    assert load_params(tmp_path / "params.yaml").train.lr == 1e-6
    for literal in ["1e-3", "1.0e-6", "-2E+5", "1e3", "0.5", "7"]:
        assert parse_yaml(f"v: {literal}", "t")["v"] == YAML(typ="safe").load(f"v: {literal}")["v"]


def test_params_are_frozen():
    params = validate_params(table_params())
    with pytest.raises(Exception, match="frozen"):
        params.train.lr = 1.0


def test_a_repeated_key_is_an_error_not_a_silent_override(tmp_path):
    text = yaml.safe_dump(table_params(steps=200), sort_keys=False)
    assert "  steps: 200\n" in text
    repeated = text.replace("  steps: 200\n", "  steps: 200\n  steps: 5\n")
    (tmp_path / "params.yaml").write_text(repeated)
    with pytest.raises(UsageError, match=r"malformed YAML at line \d+: key 'steps' repeated"):
        load_params(tmp_path / "params.yaml")
