"""Bad params.yaml, table-driven over every key the machinery owns (data.source, data.csv.*,
train.*, mlflow.*): one line naming the key; through the CLI, exit 2 and nothing touched.

Every row runs in-process through load_params (milliseconds each); a representative subset runs
through `python -m polyfit check` (the pipeline's first DVC stage) and the stages, to prove the
CLI side: exit code, one stderr line, and no file or MLflow store touched. Params are validated
before torch or mlflow is imported. The model block's keys are the user's (build_model's), and
the function source's are the tutorial's (tests/tutorial/test_function_params.py): neither is
in this table.
"""

import math

import pytest
import yaml
from conftest import polyfit, table_params, write_params
from fault_tools import store_env

from polyfit.errors import UsageError
from polyfit.params import flatten, load_params, validate_params
from polyfit.yaml12 import parse_yaml

DEFAULTS = {key: value for key, value in flatten(table_params()).items() if key[:6] != "model."}
MISSING = object()
# Keys whose default is null: a representative value of the type they take otherwise.
NULLABLE = {"train.batch_size": 16, "train.checkpoint_every": 100}

# A value of the right type outside the allowed range, for every key that has a range.
OUT_OF_RANGE = {
    "data.source": "parquet",
    "data.csv.path": "",
    "data.csv.features": [],
    "data.csv.target": " ",
    "data.csv.held_out_fraction": 1.0,
    "data.csv.split_seed": -1,
    "train.optimizer": "Adadelta",
    "train.lr": 0.0,
    "train.steps": 0,
    "train.batch_size": 0,
    "train.seed": 2**63,
    "train.device": "tpu",
    "train.threads": 0,
    "train.log_every": 0,
    "train.checkpoint_every": 0,
    "train.divergence_factor": 1.0,
    "train.gradient": "numeric",
    "train.options.SGD.momentum": -0.9,
    "train.options.SGD.dampening": -1.0,
    "train.options.SGD.weight_decay": -1.0e-3,
    "train.options.RMSprop.alpha": 1.5,
    "train.options.RMSprop.eps": 0.0,
    "train.options.RMSprop.momentum": -0.1,
    "train.options.RMSprop.weight_decay": -1.0,
    "train.options.Adam.beta1": 1.0,
    "train.options.Adam.beta2": -0.1,
    "train.options.Adam.eps": -1.0e-8,
    "train.options.Adam.weight_decay": -1.0,
    "train.options.AdamW.beta1": -0.5,
    "train.options.AdamW.beta2": 1.5,
    "train.options.AdamW.eps": 0.0,
    "train.options.AdamW.weight_decay": -1.0e-2,
    "train.options.Adagrad.lr_decay": -1.0,
    "train.options.Adagrad.eps": 0.0,
    "train.options.Adagrad.weight_decay": -1.0,
    "train.options.Adagrad.initial_accumulator_value": -1.0,
    "train.options.LBFGS.max_iter": 0,
    "train.options.LBFGS.history_size": 0,
    "train.options.LBFGS.tolerance_grad": 0.0,
    "train.options.LBFGS.tolerance_change": -1.0e-9,
    "train.options.LBFGS.line_search_fn": "backtracking",
    "mlflow.experiment": "",
    "mlflow.registered_model": "",
}
# Keys that accept every value of their type.
NO_RANGE = {
    "train.options.SGD.nesterov",
    "train.options.RMSprop.centered",
    "train.options.Adam.amsgrad",
    "train.options.AdamW.amsgrad",
}
# Values valid one by one that break a rule joining two keys: (changes, key the error names).
CROSS_KEY = {
    "nesterov without momentum": ({"train.options.SGD.momentum": 0.0}, "train.options.SGD"),
    "gram with mini-batches": ({"train.gradient": "gram", "train.batch_size": 16}, "train"),
    "target among the features": ({"data.csv.features": ["u", "y"]}, "data.csv"),
    "source without its block": ({"data.source": "function"}, "data"),
    "csv block missing": ({"data.csv": MISSING}, "data"),
}


def bad_values(default) -> dict[str, object]:
    """label -> an invalid value of the wrong kind, chosen by the type of the default."""
    if isinstance(default, bool):  # before int: bool is an int in Python
        return {"string": "true", "int": 1, "null": None}
    if isinstance(default, int):
        return {"string": "many", "quoted-number": "10", "float": 2.5, "bool": True, "null": None}
    if isinstance(default, float):
        nonfinite = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
        return {
            "string": "small",
            "quoted-number": "0.001",
            "bool": False,
            "null": None,
        } | nonfinite
    if isinstance(default, list):
        return {"string": "u", "int": 5, "nested": [default], "null": None}
    return {"int": 5, "list": [default], "null": None}


def table() -> list:
    """(key, changes to the defaults, key the error must name) for every way to get it wrong."""
    rows = []
    for key, default in DEFAULTS.items():
        values = bad_values(NULLABLE.get(key, default)) | {"missing": MISSING}
        if key in NULLABLE:
            del values["null"]  # null is what they default to
        if key in OUT_OF_RANGE:
            values["out-of-range"] = OUT_OF_RANGE[key]
        for label, value in values.items():
            rows.append(pytest.param({key: value}, key, id=f"{key}-{label}"))
        typo = key + "x"  # a misspelt key: named as the typo it is (test_params: the key meant)
        rows.append(pytest.param({key: MISSING, typo: default}, typo, id=f"{key}-misspelt"))
    for block in ("data", "model", "train", "mlflow"):
        rows.append(pytest.param({block: MISSING}, block, id=f"{block}-missing-block"))
    rows.append(pytest.param({"extra.key": 1}, "extra", id="unknown-block"))
    for label, (changes, named) in CROSS_KEY.items():
        rows.append(pytest.param(changes, named, id=label))
    return rows


def changed(changes: dict) -> dict:
    """table_params() as parsed YAML, with dotted keys set (or removed when MISSING)."""
    params = table_params()
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        block = params
        for key in parents:
            block = block.setdefault(key, {})
        if value is MISSING:
            del block[leaf]
        else:
            block[leaf] = value
    return params


def test_every_key_has_a_range_row_or_has_no_range():
    assert set(OUT_OF_RANGE) | NO_RANGE == set(DEFAULTS)
    assert not set(OUT_OF_RANGE) & NO_RANGE


def test_the_unchanged_params_are_valid(tmp_path):
    write_params(tmp_path, changed({}))
    load_params(tmp_path / "params.yaml")
    for key, value in NULLABLE.items():  # the stand-in values of the nullable keys are valid
        write_params(tmp_path, changed({key: value}))
        load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize(("changes", "named"), table())
def test_bad_value_stops_with_one_line_naming_the_key(changes, named):
    text = yaml.safe_dump(changed(changes), sort_keys=False)  # through YAML, as users write it
    with pytest.raises(UsageError) as caught:
        validate_params(parse_yaml(text, "params.yaml"), "params.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("params.yaml: ")
    key = message.removeprefix("params.yaml: ")
    assert any(key.startswith(named + end) for end in (":", " (", ".")), message


MALFORMED = {
    "unclosed bracket": "data: [1, 2\n",
    "tab indentation": "data:\n\tsource: csv\n",
    "bad indentation": "data:\n  source: csv\n csv: 1.0\n",
    "unclosed quote": "data:\n  source: 'csv\n",
    "list document": "- data\n- train\n",
    "scalar document": "just words\n",
    "empty file": "",
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_yaml_stops_with_one_line(tmp_path, text):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(UsageError) as caught:
        load_params(tmp_path / "params.yaml")
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"{tmp_path / 'params.yaml'}: ")


def test_a_params_file_that_is_not_text_stops_with_one_line(tmp_path):
    (tmp_path / "params.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UsageError, match=r"params.yaml: not UTF-8 text: invalid start byte"):
        load_params(tmp_path / "params.yaml")


def files_state(folder) -> dict:
    """Each file's bytes, inode and mtime: an atomic rewrite with equal bytes still shows."""
    state = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            state[str(path.relative_to(folder))] = (
                path.read_bytes(),
                stat.st_ino,
                stat.st_mtime_ns,
            )
    return state


EARLIER = ("data/train.pt", "data/held_out.pt", "models/model.pt", "metrics/train.json")


@pytest.fixture
def earlier_outputs(tmp_path):
    """A folder holding stage outputs from an earlier run (stand-in bytes)."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    for name in EARLIER:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(f"earlier {name}\n".encode())
    return tmp_path


CLI_CASES = {
    "quoted number": ({"train.lr": "0.001"}, "train.lr: got the string '0.001'"),
    "nan": (
        {"data.csv.held_out_fraction": math.nan},
        "data.csv.held_out_fraction: Input should be a finite number",
    ),
    "misspelt key": (
        {"train.lr": MISSING, "train.lrr": 0.01},
        "train.lrr: unknown key; did you mean 'lr'?",
    ),
    "out of range": ({"train.threads": 0}, "train.threads: Input should be greater than or equal"),
    "several": (
        {"train.steps": 0, "data.csv.split_seed": -1},
        "data.csv.split_seed: Input should be greater than or equal to 0 (got -1) (and 1 more "
        "problem)",
    ),
}
# The CLI side is the same for every message (the table above checks them all): check, the
# first DVC stage, on a few; each stage, which validates params before anything else, on one.
CLI_RUNS = [
    pytest.param("check", *CLI_CASES[case], id=f"check-{case}")
    for case in ("quoted number", "misspelt key", "nan", "several")
] + [
    pytest.param(stage, *CLI_CASES[case], id=f"{stage}-{case}")
    for stage, case in [
        ("generate", "misspelt key"),
        ("train", "quoted number"),
        ("evaluate", "out of range"),
    ]
]


@pytest.mark.parametrize(("command", "changes", "expected"), CLI_RUNS)
def test_cli_exits_2_with_one_line_and_touches_nothing(earlier_outputs, command, changes, expected):
    write_params(earlier_outputs, changed(changes))
    before = files_state(earlier_outputs)
    done = polyfit(command, cwd=earlier_outputs, env=store_env(earlier_outputs))
    assert done.returncode == 2
    assert done.stderr.startswith(f"polyfit {command}: error: params.yaml: {expected}")
    assert done.stderr.count("\n") == 1 and done.stderr.endswith("\n")
    assert done.stdout == ""
    assert files_state(earlier_outputs) == before  # the store is never even created


def test_check_accepts_valid_params_and_touches_nothing(earlier_outputs):
    write_params(earlier_outputs, table_params())
    before = files_state(earlier_outputs)
    done = polyfit("check", cwd=earlier_outputs, env=store_env(earlier_outputs))
    assert (done.returncode, done.stdout, done.stderr) == (0, "params.yaml: valid\n", "")
    assert files_state(earlier_outputs) == before


@pytest.mark.parametrize("command", ["check", "train"])
def test_cli_malformed_yaml_names_the_line(earlier_outputs, command):
    write_params(earlier_outputs, table_params())
    path = earlier_outputs / "params.yaml"
    assert "  steps: " in path.read_text()
    path.write_text(path.read_text().replace("  steps: ", "  steps: ["))
    before = files_state(earlier_outputs)
    done = polyfit(command, cwd=earlier_outputs, env=store_env(earlier_outputs))
    assert done.returncode == 2
    assert done.stderr.startswith(f"polyfit {command}: error: params.yaml: malformed YAML at line ")
    assert done.stderr.count("\n") == 1 and done.stdout == ""
    assert files_state(earlier_outputs) == before


def test_the_table_is_written_through_yaml_as_users_would():
    """Sanity check of the harness: NaN and quoted numbers survive the YAML round trip."""
    text = yaml.safe_dump(
        changed({"train.lr": "0.001", "data.csv.held_out_fraction": math.nan, "train.steps": "10"})
    )
    assert "lr: '0.001'" in text and "held_out_fraction: .nan" in text and "steps: '10'" in text
