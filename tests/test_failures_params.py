"""Bad params.yaml, table-driven over every key: exit 2, one line naming the key, nothing touched.

Every row runs in-process through load_params (milliseconds each); a representative subset runs
through `python -m polyfit <stage>` to prove the CLI side: exit code, one stderr line, and no
file or MLflow store touched. Params are validated before torch or mlflow is imported.
"""

import math

import pytest
import yaml
from conftest import default_params, polyfit, write_params
from fault_tools import store_env

from polyfit.errors import UsageError
from polyfit.params import flatten, load_params

DEFAULTS = flatten(default_params())  # every leaf key of params.yaml -> its value
MISSING = object()

# A value of the right type outside the allowed range, for every key that has a range.
OUT_OF_RANGE = {
    "data.target": "tan",
    "data.n_samples": 0,
    "data.noise_std": -0.1,
    "data.seed": -1,
    "model.degree": 13,
    "train.optimizer": "Adadelta",
    "train.lr": 0.0,
    "train.steps": 0,
    "train.seed": 2**63,
    "train.log_every": 0,
    "train.threads": 0,
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
    "evaluate.grid_points": 1,
    "mlflow.experiment": "",
    "mlflow.registered_model": "",
}
# Keys that accept every finite value of their type; the cross-key rules cover x_min and x_max.
NO_RANGE = {
    "data.x_min",
    "data.x_max",
    "train.options.SGD.nesterov",
    "train.options.RMSprop.centered",
    "train.options.Adam.amsgrad",
    "train.options.AdamW.amsgrad",
}
# Values valid one by one that break a rule joining two keys: (changes, key the error names).
CROSS_KEY = {
    "x_min above x_max": ({"data.x_min": 4.0}, "data.x_min"),
    "x_min equal to x_max": ({"data.x_min": 1.0, "data.x_max": 1.0}, "data.x_min"),
    "too few samples for the degree": ({"data.n_samples": 3}, "data.n_samples"),
    "nesterov without momentum": ({"train.options.SGD.momentum": 0.0}, "train.options.SGD"),
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
    return {"int": 5, "list": [default], "null": None}


def table() -> list:
    """(key, changes to the defaults, key the error must name) for every way to get it wrong."""
    rows = []
    for key, default in DEFAULTS.items():
        values = bad_values(default) | {"missing": MISSING}
        if key in OUT_OF_RANGE:
            values["out-of-range"] = OUT_OF_RANGE[key]
        for label, value in values.items():
            rows.append(pytest.param({key: value}, key, id=f"{key}-{label}"))
        typo = key + "x"  # a misspelt key: named as the typo it is (test_params: the key meant)
        rows.append(pytest.param({key: MISSING, typo: default}, typo, id=f"{key}-misspelt"))
    for block in ("data", "model", "train", "evaluate", "mlflow"):
        rows.append(pytest.param({block: MISSING}, block, id=f"{block}-missing-block"))
    rows.append(pytest.param({"extra.key": 1}, "extra", id="unknown-block"))
    for label, (changes, named) in CROSS_KEY.items():
        rows.append(pytest.param(changes, named, id=label))
    return rows


def changed(changes: dict) -> dict:
    """The default params as parsed YAML, with dotted keys set (or removed when MISSING)."""
    params = default_params()
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


def test_the_unchanged_defaults_are_valid(tmp_path):
    write_params(tmp_path, changed({}))
    load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize(("changes", "named"), table())
def test_bad_value_stops_with_one_line_naming_the_key(tmp_path, changes, named):
    write_params(tmp_path, changed(changes))  # through YAML, as users write it
    with pytest.raises(UsageError) as caught:
        load_params(tmp_path / "params.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'params.yaml'}: ")
    assert f"{named}:" in message or f"{named} (" in message, message


MALFORMED = {
    "unclosed bracket": "data: [1, 2\n",
    "tab indentation": "data:\n\ttarget: sin\n",
    "bad indentation": "data:\n  target: sin\n x_min: 1.0\n",
    "unclosed quote": "data:\n  target: 'sin\n",
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
    with pytest.raises(UsageError):
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


@pytest.fixture
def earlier_outputs(tmp_path):
    """A folder holding every stage output from an earlier run (stand-in bytes)."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    for name in ("data/dataset.pt", "models/model.pt", "metrics/train.json", "plots/loss.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(f"earlier {name}\n".encode())
    return tmp_path


def set_text(folder, old: str, new: str) -> None:
    """Edit params.yaml as text, to write YAML the way a person would."""
    path = folder / "params.yaml"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))


CLI_CASES = {
    "quoted number": ({"train.lr": "0.001"}, "train.lr: got the string '0.001'"),
    "nan": ({"data.x_max": math.nan}, "data.x_max: Input should be a finite number"),
    "unknown key": ({"data.x_mn": -1.0}, "data.x_mn: unknown key"),
    "misspelt key": (
        {"data.x_min": MISSING, "data.x_mn": -1.0},
        "data.x_mn: unknown key; did you mean 'x_min'?",
    ),
    "missing key": ({"evaluate.grid_points": MISSING}, "evaluate.grid_points: missing key"),
    "out of range": ({"model.degree": 13}, "model.degree: Input should be less than or equal"),
    "wrong type": ({"mlflow.experiment": 5}, "mlflow.experiment: Input should be a valid string"),
}


@pytest.mark.parametrize("stage", ["generate", "train", "evaluate"])
@pytest.mark.parametrize(("changes", "expected"), CLI_CASES.values(), ids=CLI_CASES.keys())
def test_cli_exits_2_with_one_line_and_touches_nothing(earlier_outputs, stage, changes, expected):
    write_params(earlier_outputs, changed(changes))
    before = files_state(earlier_outputs)
    done = polyfit(stage, cwd=earlier_outputs, env=store_env(earlier_outputs))
    assert done.returncode == 2
    assert done.stderr.startswith(f"polyfit {stage}: error: params.yaml: {expected}")
    assert done.stderr.count("\n") == 1 and done.stderr.endswith("\n")
    assert done.stdout == ""
    assert files_state(earlier_outputs) == before  # the store is never even created


@pytest.mark.parametrize("stage", ["generate", "train", "evaluate"])
def test_cli_malformed_yaml_names_the_line(earlier_outputs, stage):
    write_params(earlier_outputs, default_params())
    set_text(earlier_outputs, "  steps: ", "  steps: [")
    before = files_state(earlier_outputs)
    done = polyfit(stage, cwd=earlier_outputs, env=store_env(earlier_outputs))
    assert done.returncode == 2
    assert done.stderr.startswith(f"polyfit {stage}: error: params.yaml: malformed YAML at line ")
    assert done.stderr.count("\n") == 1 and done.stdout == ""
    assert files_state(earlier_outputs) == before


def test_the_table_is_written_through_yaml_as_users_would():
    """Sanity check of the harness: NaN and quoted numbers survive the YAML round trip."""
    text = yaml.safe_dump(
        changed({"train.lr": "0.001", "data.x_max": math.nan, "train.steps": "10"})
    )
    assert "lr: '0.001'" in text and "x_max: .nan" in text and "steps: '10'" in text
